//! Flags that replace pieces of the built-in catalog with the user's own files.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use skyx_catalog::{
    BUILTIN_THROUGHPUT, BUILTIN_THROUGHPUT_2022_01, Catalog, Cloud, EgressPriceGrid, GridColumn,
    Provenance, RttGrid, ThroughputGrid, VmPriceTable,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BuiltinGrid {
    /// Skyplane's complete 71-region grid measured 2022-11-28 (default).
    #[value(name = "2022-11")]
    Nov2022,
    /// Skyplane's 63-region grid measured 2022-01-29 (the one its planner used until 2023).
    #[value(name = "2022-01")]
    Jan2022,
}

/// Which side of each iperf3 measurement to believe (see `catalog/data/SOURCE.md`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GridColumnArg {
    /// throughput_received: goodput at the receiver (default).
    Received,
    /// throughput_sent: what Skyplane's solver and Cloudcast read, to compare with their plans.
    Sent,
}

impl From<GridColumnArg> for GridColumn {
    fn from(arg: GridColumnArg) -> GridColumn {
        match arg {
            GridColumnArg::Received => GridColumn::Received,
            GridColumnArg::Sent => GridColumn::Sent,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct CatalogArgs {
    /// Built-in throughput grid to use.
    #[arg(long, value_enum, default_value = "2022-11", global = true)]
    pub grid: BuiltinGrid,
    /// Which column of the throughput grid to read: received (goodput, the default) or sent
    /// (what Skyplane's solver and Cloudcast read).
    #[arg(long, value_enum, default_value = "received", global = true)]
    pub grid_column: GridColumnArg,
    /// Throughput grid file in Skyplane's throughput.csv schema (bits/s; the column
    /// --grid-column names, throughput_received in either spelling by default). Replaces the
    /// built-in grid, e.g. with `skyx bench paths` output.
    #[arg(long, value_name = "FILE", global = true)]
    pub throughput_grid: Option<PathBuf>,
    /// Egress price file in Skyplane's cost.csv schema (src,dest[,src_tier,dest_tier],cost).
    #[arg(long, value_name = "FILE", global = true)]
    pub price_grid: Option<PathBuf>,
    /// RTT file in Skyplane's latency.csv schema (avg_rtt in ms).
    #[arg(long, value_name = "FILE", global = true)]
    pub rtt_grid: Option<PathBuf>,
    /// VM price file in SkyPilot's vms.csv schema, as CLOUD=FILE (repeat per cloud). Clouds not
    /// given keep the built-in prices.
    #[arg(long, value_name = "CLOUD=FILE", global = true)]
    pub vm_prices: Vec<String>,
}

fn open(path: &Path, what: &str) -> Result<impl std::io::Read> {
    Ok(crate::files::open_capped(
        path,
        what,
        crate::files::CATALOG_CAP,
    )?)
}

fn provenance(what: &'static str, path: &Path) -> Provenance {
    Provenance {
        what,
        source: format!("user file {}", path.display()),
        as_of: "as the file says".into(),
    }
}

impl CatalogArgs {
    pub fn load(&self) -> Result<Catalog> {
        let mut catalog = Catalog::builtin();
        let column = GridColumn::from(self.grid_column);
        let builtin = match self.grid {
            BuiltinGrid::Nov2022 => (
                BUILTIN_THROUGHPUT,
                "Skyplane broadcast/profiles/whole_throughput_11_28.csv (iperf3 -P 64)",
                "2022-11-28",
            ),
            BuiltinGrid::Jan2022 => (
                BUILTIN_THROUGHPUT_2022_01,
                "Skyplane profiles/throughput.csv (iperf3 -P 64)",
                "2022-01-29",
            ),
        };
        // The built-in catalog already holds the default grid read from the default column.
        if !matches!(
            (self.grid, column),
            (BuiltinGrid::Nov2022, GridColumn::Received)
        ) {
            let ((text, name), source, as_of) = builtin;
            catalog = catalog.with_throughput_grid(
                ThroughputGrid::from_csv_column(text.as_bytes(), name, column)?,
                Provenance {
                    what: "throughput",
                    source: format!("{source}, {}", column.label()),
                    as_of: as_of.into(),
                },
            );
        }
        if let Some(path) = &self.throughput_grid {
            let grid = ThroughputGrid::from_csv_column(
                open(path, "throughput grid")?,
                &path.display().to_string(),
                column,
            )?;
            if grid.is_empty() {
                bail!("throughput grid {} has no usable rows", path.display());
            }
            catalog = catalog.with_throughput_grid(grid, provenance("throughput", path));
        }
        if let Some(path) = &self.price_grid {
            let grid =
                EgressPriceGrid::from_csv(open(path, "price grid")?, &path.display().to_string())?;
            catalog = catalog.with_egress_prices(grid, provenance("egress prices", path));
        }
        if let Some(path) = &self.rtt_grid {
            let grid = RttGrid::from_csv(open(path, "RTT grid")?, &path.display().to_string())?;
            catalog = catalog.with_rtt_grid(grid, provenance("rtt", path));
        }
        if !self.vm_prices.is_empty() {
            let mut replaced: Vec<Cloud> = Vec::new();
            let mut table = VmPriceTable::default();
            for spec in &self.vm_prices {
                let Some((cloud, file)) = spec.split_once('=') else {
                    bail!("--vm-prices '{spec}': expected CLOUD=FILE, e.g. aws=vms.csv");
                };
                let cloud: Cloud = cloud.parse()?;
                let path = PathBuf::from(file);
                table.extend(VmPriceTable::from_csv(
                    cloud,
                    open(&path, "VM price")?,
                    &path.display().to_string(),
                )?);
                replaced.push(cloud);
            }
            for offer in catalog.vm_prices().offers() {
                if !replaced.contains(&offer.cloud) {
                    table.push(offer.clone());
                }
            }
            catalog = catalog.with_vm_prices(
                table,
                Provenance {
                    what: "vm prices",
                    source: format!("user files {}", self.vm_prices.join(", ")),
                    as_of: "as the files say".into(),
                },
            );
        }
        Ok(catalog)
    }
}
