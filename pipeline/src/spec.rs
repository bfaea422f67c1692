//! The pipeline spec: a TOML file of inputs, stages and an objective, parsed and checked
//! without the catalog. Every error names the file's line and column it is about.
//!
//! ```toml
//! [pipeline]
//! name = "ml"
//! objective = "min-cost"            # min-cost | min-time | min-cost-deadline | min-time-budget
//! deadline = "36h"                  # for min-cost-deadline
//! budget = 500.0                    # USD, for min-time-budget
//! [pipeline.constraints]            # where data (relays included) and stages may be
//! continents = ["north-america", "europe"]
//!
//! [[input]]
//! name = "raw"
//! url = "az://account/raw/"
//! region = "azure:eastus"
//! size = "200GB"
//!
//! [[stage]]
//! name = "preprocess"
//! run = "python preprocess.py"
//! inputs = ["raw"]
//! output = { size = "50GB", compression = 2.0 }
//! constraints = { confidential = true }
//! candidate = [ { instance = "Standard_DC8s_v3", hours = 6 } ]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use skyx_catalog::units::{parse_bytes, parse_duration_s};
use toml::Spanned;

/// An error in a spec, with where it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct SpecError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What the pipeline optimises.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum PipelineObjective {
    MinCost,
    MinTime,
    MinCostDeadline { seconds: f64 },
    MinTimeBudget { usd: f64 },
}

/// Where a stage or the pipeline's data may be (names as the CLI's `--only-*`/`--deny-*`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PlacementRules {
    pub regions: Vec<String>,
    pub deny_regions: Vec<String>,
    pub clouds: Vec<String>,
    pub deny_clouds: Vec<String>,
    pub countries: Vec<String>,
    pub deny_countries: Vec<String>,
    pub continents: Vec<String>,
    pub deny_continents: Vec<String>,
    /// Only confidential-computing instance types.
    pub confidential: bool,
}

/// What a stage may run on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// An instance type by name (any cloud that lists it).
    Instance { name: String },
    /// `count` accelerators of a kind (`A100`, `tpu-v3-8`, `Inferentia`), on whatever instance
    /// type carries them.
    Accelerator { name: String, count: u32 },
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Instance { name } => f.write_str(name),
            Resource::Accelerator { name, count } => write!(f, "{count}x {name}"),
        }
    }
}

/// One way to run a stage, with the user's runtime estimate for it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CandidateSpec {
    pub resource: Resource,
    pub hours: f64,
    pub line: usize,
}

/// Data a stage reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "kind", content = "index", rename_all = "snake_case")]
pub enum DataRef {
    Input(usize),
    Stage(usize),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InputSpec {
    pub name: String,
    pub url: String,
    pub region: String,
    pub bytes: u64,
    /// Expected logical/wire ratio when moved compressed.
    pub compression: f64,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageSpec {
    pub name: String,
    /// The command, run with the stage's inputs and output directory in its environment.
    pub run: String,
    pub inputs: Vec<DataRef>,
    pub output_bytes: u64,
    pub output_compression: f64,
    pub rules: PlacementRules,
    pub candidates: Vec<CandidateSpec>,
    pub line: usize,
}

/// A checked pipeline: names unique, references resolved, acyclic; stages in topological order
/// (`order`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PipelineSpec {
    pub file: String,
    pub name: String,
    pub objective: PipelineObjective,
    pub rules: PlacementRules,
    pub inputs: Vec<InputSpec>,
    pub stages: Vec<StageSpec>,
    pub order: Vec<usize>,
}

impl PipelineSpec {
    /// Where `r` comes from, as the user named it.
    pub fn data_name(&self, r: DataRef) -> &str {
        match r {
            DataRef::Input(i) => &self.inputs[i].name,
            DataRef::Stage(s) => &self.stages[s].name,
        }
    }

    /// Bytes and compression ratio of the data `r`.
    pub fn data_size(&self, r: DataRef) -> (u64, f64) {
        match r {
            DataRef::Input(i) => (self.inputs[i].bytes, self.inputs[i].compression),
            DataRef::Stage(s) => (
                self.stages[s].output_bytes,
                self.stages[s].output_compression,
            ),
        }
    }
}

// --- the file as written ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pipeline: Spanned<RawHeader>,
    #[serde(default)]
    input: Vec<Spanned<RawInput>>,
    #[serde(default)]
    stage: Vec<Spanned<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    objective: Spanned<String>,
    deadline: Option<Spanned<String>>,
    budget: Option<Spanned<f64>>,
    #[serde(default)]
    constraints: Option<Spanned<RawRules>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    name: Spanned<String>,
    url: String,
    region: Spanned<String>,
    size: Spanned<String>,
    compression: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    run: String,
    #[serde(default)]
    inputs: Vec<Spanned<String>>,
    output: Option<Spanned<RawOutput>>,
    constraints: Option<Spanned<RawRules>>,
    #[serde(default)]
    candidate: Vec<Spanned<RawCandidate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    size: Spanned<String>,
    compression: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    deny_regions: Vec<String>,
    #[serde(default)]
    clouds: Vec<String>,
    #[serde(default)]
    deny_clouds: Vec<String>,
    #[serde(default)]
    countries: Vec<String>,
    #[serde(default)]
    deny_countries: Vec<String>,
    #[serde(default)]
    continents: Vec<String>,
    #[serde(default)]
    deny_continents: Vec<String>,
    #[serde(default)]
    confidential: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCandidate {
    instance: Option<String>,
    accelerator: Option<String>,
    count: Option<u32>,
    hours: f64,
}

impl From<RawRules> for PlacementRules {
    fn from(r: RawRules) -> Self {
        PlacementRules {
            regions: r.regions,
            deny_regions: r.deny_regions,
            clouds: r.clouds,
            deny_clouds: r.deny_clouds,
            countries: r.countries,
            deny_countries: r.deny_countries,
            continents: r.continents,
            deny_continents: r.deny_continents,
            confidential: r.confidential,
        }
    }
}

/// Turns byte offsets into 1-based lines and columns.
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        LineIndex { text }
    }

    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, column)
    }
}

struct Ctx<'a> {
    file: &'a str,
    lines: LineIndex<'a>,
}

impl Ctx<'_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> SpecError {
        let (line, column) = self.lines.position(offset);
        SpecError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.lines.position(offset).0
    }
}

/// Parses and checks a pipeline spec. `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<PipelineSpec, SpecError> {
    let cx = Ctx {
        file,
        lines: LineIndex::new(text),
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        cx.err(offset, e.message().to_string())
    })?;
    let header_at = raw.pipeline.span().start;
    let header = raw.pipeline.into_inner();

    let objective = objective(&cx, &header)?;
    let rules: PlacementRules = match header.constraints {
        Some(r) => {
            let r = r.into_inner();
            if r.confidential {
                return Err(cx.err(
                    header_at,
                    "confidential applies to stages: put it in [stage.constraints]",
                ));
            }
            r.into()
        }
        None => PlacementRules::default(),
    };

    let mut names: BTreeMap<String, (DataRef, usize)> = BTreeMap::new();
    let mut inputs = Vec::new();
    for (i, raw_input) in raw.input.into_iter().enumerate() {
        let at = raw_input.span().start;
        let input = raw_input.into_inner();
        let name = input.name.get_ref().trim().to_string();
        check_name(&cx, &name, input.name.span().start, &names)?;
        let bytes = parse_bytes(input.size.get_ref())
            .map_err(|e| cx.err(input.size.span().start, format!("input {name}: size {e}")))?;
        let compression = ratio(&cx, input.compression, &name)?;
        names.insert(name.clone(), (DataRef::Input(i), cx.line(at)));
        inputs.push(InputSpec {
            name,
            url: input.url,
            region: input.region.into_inner(),
            bytes,
            compression,
            line: cx.line(at),
        });
    }

    // Names first, so a stage may read a stage defined below it.
    for (s, raw_stage) in raw.stage.iter().enumerate() {
        let name = raw_stage.get_ref().name.get_ref().trim().to_string();
        check_name(&cx, &name, raw_stage.get_ref().name.span().start, &names)?;
        names.insert(name, (DataRef::Stage(s), cx.line(raw_stage.span().start)));
    }
    if raw.stage.is_empty() {
        return Err(cx.err(header_at, "the pipeline has no [[stage]]"));
    }

    let mut stages = Vec::new();
    for raw_stage in raw.stage {
        let at = raw_stage.span().start;
        let st = raw_stage.into_inner();
        let name = st.name.get_ref().trim().to_string();
        let mut refs = Vec::new();
        for input in &st.inputs {
            let wanted = input.get_ref().trim();
            match names.get(wanted) {
                Some((r, _)) if *r == DataRef::Stage(stages.len()) => {
                    return Err(cx.err(
                        input.span().start,
                        format!("stage {name} reads its own output"),
                    ));
                }
                Some((r, _)) => refs.push(*r),
                None => {
                    return Err(cx.err(
                        input.span().start,
                        format!(
                            "stage {name} reads {wanted:?}, which is neither an [[input]] nor a \
                             [[stage]] (known: {})",
                            names.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        if refs.is_empty() {
            return Err(cx.err(
                st.name.span().start,
                format!("stage {name} has no inputs: every stage reads an [[input]] or a stage"),
            ));
        }
        let (output_bytes, output_compression) = match st.output {
            Some(o) => {
                let o = o.into_inner();
                let bytes = parse_bytes(o.size.get_ref()).map_err(|e| {
                    cx.err(
                        o.size.span().start,
                        format!("stage {name}: output size {e}"),
                    )
                })?;
                (bytes, ratio(&cx, o.compression, &name)?)
            }
            None => (0, 1.0),
        };
        if st.candidate.is_empty() {
            return Err(cx.err(
                st.name.span().start,
                format!(
                    "stage {name} has no [[stage.candidate]]: give at least one instance or \
                     accelerator with its hours"
                ),
            ));
        }
        let mut candidates = Vec::new();
        for c in st.candidate {
            let c_at = c.span().start;
            let c = c.into_inner();
            let resource = match (c.instance, c.accelerator, c.count) {
                (Some(i), None, None) => Resource::Instance { name: i },
                (None, Some(a), count) => Resource::Accelerator {
                    name: a,
                    count: count.unwrap_or(1),
                },
                (Some(_), None, Some(_)) => {
                    return Err(cx.err(
                        c_at,
                        format!("stage {name}: count goes with accelerator, not instance"),
                    ));
                }
                (Some(_), Some(_), _) => {
                    return Err(cx.err(
                        c_at,
                        format!(
                            "stage {name}: a candidate is an instance or an accelerator, not both"
                        ),
                    ));
                }
                (None, None, _) => {
                    return Err(cx.err(
                        c_at,
                        format!("stage {name}: a candidate needs instance = \"...\" or accelerator = \"...\""),
                    ));
                }
            };
            if let Resource::Accelerator { count: 0, .. } = resource {
                return Err(cx.err(c_at, format!("stage {name}: count must be at least 1")));
            }
            if !(c.hours.is_finite() && c.hours > 0.0) {
                return Err(cx.err(
                    c_at,
                    format!(
                        "stage {name}: hours must be a positive number, not {}",
                        c.hours
                    ),
                ));
            }
            candidates.push(CandidateSpec {
                resource,
                hours: c.hours,
                line: cx.line(c_at),
            });
        }
        stages.push(StageSpec {
            name,
            run: st.run,
            inputs: refs,
            output_bytes,
            output_compression,
            rules: st
                .constraints
                .map(|r| r.into_inner().into())
                .unwrap_or_default(),
            candidates,
            line: cx.line(at),
        });
    }
    let order = topological_order(&cx, &stages, text)?;
    Ok(PipelineSpec {
        file: file.to_string(),
        name: header.name,
        objective,
        rules,
        inputs,
        stages,
        order,
    })
}

fn check_name(
    cx: &Ctx,
    name: &str,
    at: usize,
    names: &BTreeMap<String, (DataRef, usize)>,
) -> Result<(), SpecError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(cx.err(
            at,
            format!("name {name:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    if let Some((_, line)) = names.get(name) {
        return Err(cx.err(at, format!("{name:?} is already defined on line {line}")));
    }
    Ok(())
}

fn ratio(cx: &Ctx, value: Option<Spanned<f64>>, name: &str) -> Result<f64, SpecError> {
    match value {
        None => Ok(1.0),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() >= 1.0 => Ok(*v.get_ref()),
        Some(v) => Err(cx.err(
            v.span().start,
            format!("{name}: compression is a ratio of logical to wire bytes, at least 1"),
        )),
    }
}

fn objective(cx: &Ctx, h: &RawHeader) -> Result<PipelineObjective, SpecError> {
    let at = h.objective.span().start;
    let deadline = match &h.deadline {
        Some(d) => Some(
            parse_duration_s(d.get_ref())
                .map_err(|e| cx.err(d.span().start, format!("deadline {e}")))?,
        ),
        None => None,
    };
    let budget = h.budget.as_ref().map(|b| (*b.get_ref(), b.span().start));
    let o = match h.objective.get_ref().as_str() {
        "min-cost" => PipelineObjective::MinCost,
        "min-time" => PipelineObjective::MinTime,
        "min-cost-deadline" => match deadline {
            Some(s) if s > 0.0 => PipelineObjective::MinCostDeadline { seconds: s },
            _ => {
                return Err(cx.err(
                    at,
                    "min-cost-deadline needs deadline = \"...\" (e.g. \"36h\")",
                ));
            }
        },
        "min-time-budget" => match budget {
            Some((usd, _)) if usd > 0.0 => PipelineObjective::MinTimeBudget { usd },
            Some((_, b_at)) => return Err(cx.err(b_at, "budget must be a positive number of USD")),
            None => return Err(cx.err(at, "min-time-budget needs budget = USD (e.g. 500.0)")),
        },
        other => {
            return Err(cx.err(
                at,
                format!(
                    "objective {other:?}: expected min-cost, min-time, min-cost-deadline or \
                     min-time-budget"
                ),
            ));
        }
    };
    if deadline.is_some() && !matches!(o, PipelineObjective::MinCostDeadline { .. }) {
        let d_at = h.deadline.as_ref().map_or(at, |d| d.span().start);
        return Err(cx.err(
            d_at,
            "deadline only goes with objective = \"min-cost-deadline\"",
        ));
    }
    if budget.is_some() && !matches!(o, PipelineObjective::MinTimeBudget { .. }) {
        let b_at = h.budget.as_ref().map_or(at, |b| b.span().start);
        return Err(cx.err(
            b_at,
            "budget only goes with objective = \"min-time-budget\"",
        ));
    }
    Ok(o)
}

/// Kahn's algorithm; on a cycle, names the stages in it and points at the first.
fn topological_order(cx: &Ctx, stages: &[StageSpec], text: &str) -> Result<Vec<usize>, SpecError> {
    let n = stages.len();
    let mut indegree = vec![0usize; n];
    let mut succ = vec![Vec::new(); n];
    for (v, s) in stages.iter().enumerate() {
        for r in &s.inputs {
            if let DataRef::Stage(u) = *r {
                indegree[v] += 1;
                succ[u].push(v);
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(n);
    while let Some(u) = ready.pop() {
        order.push(u);
        for &v in &succ[u] {
            indegree[v] -= 1;
            if indegree[v] == 0 {
                ready.push(v);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk back along inputs from a stage left over until a stage repeats: that is the cycle.
    let mut path: Vec<usize> = Vec::new();
    let mut v = (0..n)
        .find(|&v| indegree[v] > 0)
        .expect("a stage in a cycle");
    while !path.contains(&v) {
        path.push(v);
        v = stages[v]
            .inputs
            .iter()
            .find_map(|r| match *r {
                DataRef::Stage(u) if indegree[u] > 0 => Some(u),
                _ => None,
            })
            .expect("a stage in a cycle reads another");
    }
    let start = path
        .iter()
        .position(|&x| x == v)
        .expect("repeat is on the path");
    let mut cycle: Vec<&str> = path[start..]
        .iter()
        .rev()
        .map(|&s| stages[s].name.as_str())
        .collect();
    cycle.push(cycle[0]);
    let first = path[start];
    let offset = line_offset(text, stages[first].line);
    Err(cx.err(
        offset,
        format!("the stages form a cycle: {}", cycle.join(" → ")),
    ))
}

fn line_offset(text: &str, line: usize) -> usize {
    text.split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pipeline]
name = "ml"
objective = "min-cost-deadline"
deadline = "36h"

[[input]]
name = "raw"
url = "az://acct/raw/"
region = "azure:eastus"
size = "200GB"

[[stage]]
name = "serve"
run = "serve"
inputs = ["train"]
[[stage.candidate]]
accelerator = "Inferentia"
hours = 2

[[stage]]
name = "train"
run = "train"
inputs = ["raw"]
output = { size = "5GB" }
candidate = [ { accelerator = "tpu-v3-8", hours = 4 }, { instance = "p4d.24xlarge", hours = 1.5 } ]
"#;

    #[test]
    fn a_good_spec_parses_into_topological_order() {
        let p = parse(GOOD, "p.toml").unwrap();
        assert_eq!(
            p.objective,
            PipelineObjective::MinCostDeadline {
                seconds: 36.0 * 3600.0
            }
        );
        assert_eq!(p.stages.len(), 2);
        // serve reads train, defined below it: train comes first.
        let names: Vec<_> = p.order.iter().map(|&s| p.stages[s].name.as_str()).collect();
        assert_eq!(names, ["train", "serve"]);
        assert_eq!(p.stages[1].inputs, vec![DataRef::Input(0)]);
        assert_eq!(p.stages[1].output_bytes, 5_000_000_000);
        assert_eq!(
            p.stages[1].candidates[0].resource,
            Resource::Accelerator {
                name: "tpu-v3-8".into(),
                count: 1
            }
        );
        assert_eq!(p.stages[0].line, 13);
    }

    fn error(text: &str) -> SpecError {
        parse(text, "p.toml").unwrap_err()
    }

    #[test]
    fn unknown_fields_point_at_their_line() {
        let bad = GOOD.replace("hours = 2\n", "hours = 2\ngpus = 4\n");
        let e = error(&bad);
        assert_eq!(e.line, 20, "{e}");
        assert!(e.message.contains("gpus"), "{e}");
    }

    #[test]
    fn dangling_inputs_name_what_exists() {
        let bad = GOOD.replace(r#"inputs = ["train"]"#, r#"inputs = ["trian"]"#);
        let e = error(&bad);
        assert_eq!(e.line, 16, "{e}");
        assert!(
            e.message.contains("\"trian\"") && e.message.contains("train"),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_named_stage_by_stage() {
        let bad = GOOD.replace(r#"inputs = ["raw"]"#, r#"inputs = ["serve"]"#);
        let e = error(&bad);
        assert!(e.message.contains("cycle"), "{e}");
        assert!(
            e.message.contains("train") && e.message.contains("serve"),
            "{e}"
        );
        assert!(e.line == 13 || e.line == 22, "{e}");
    }

    #[test]
    fn objectives_need_their_parameters() {
        let e = error(&GOOD.replace("deadline = \"36h\"\n", ""));
        assert!(e.message.contains("needs deadline"), "{e}");
        assert_eq!(e.line, 4);
        let e = error(&GOOD.replace("min-cost-deadline", "cheapest"));
        assert!(e.message.contains("expected min-cost"), "{e}");
        let e = error(&GOOD.replace("min-cost-deadline", "min-cost"));
        assert!(e.message.contains("deadline only goes with"), "{e}");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn bad_sizes_candidates_and_names_are_refused_where_they_are() {
        let e = error(&GOOD.replace("size = \"200GB\"", "size = \"200 parsecs\""));
        assert_eq!(e.line, 11, "{e}");
        let e = error(&GOOD.replace("hours = 2\n", "hours = -1\n"));
        assert!(e.message.contains("hours must be a positive"), "{e}");
        let e = error(&GOOD.replace("name = \"serve\"", "name = \"train\""));
        assert!(e.message.contains("already defined on line"), "{e}");
        let e = error(&GOOD.replace(
            "accelerator = \"Inferentia\"",
            "instance = \"x\"\naccelerator = \"y\"",
        ));
        assert!(e.message.contains("not both"), "{e}");
        let e = error("[pipeline]\nname = \"x\"\nobjective = \"min-cost\"\n");
        assert!(e.message.contains("no [[stage]]"), "{e}");
        let e = error("[pipeline\n");
        assert_eq!(e.line, 1, "{e}");
    }
}
