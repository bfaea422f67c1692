//! `--include` / `--exclude` in the order they were given. clap keeps each flag's values
//! apart, so the order between the two flags comes from their positions on the command line.

use clap::ArgMatches;
use skyx_gateway::FilterRule;

/// The filters of a `cp`/`sync` invocation (whose flags are `include` and `exclude`), in
/// command-line order: the last one matching a key decides.
pub fn in_order(matches: &ArgMatches) -> Vec<FilterRule> {
    type Rule = fn(String) -> FilterRule;
    let flags: [(&str, Rule); 2] = [
        ("include", FilterRule::Include),
        ("exclude", FilterRule::Exclude),
    ];
    let mut rules: Vec<(usize, FilterRule)> = Vec::new();
    for (id, rule) in flags {
        if let (Some(positions), Some(values)) =
            (matches.indices_of(id), matches.get_many::<String>(id))
        {
            rules.extend(positions.zip(values).map(|(at, v)| (at, rule(v.clone()))));
        }
    }
    rules.sort_by_key(|(at, _)| *at);
    rules.into_iter().map(|(_, rule)| rule).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    #[test]
    fn interleaved_flags_keep_their_order() {
        let cmd = Command::new("t")
            .arg(
                Arg::new("include")
                    .long("include")
                    .action(ArgAction::Append),
            )
            .arg(
                Arg::new("exclude")
                    .long("exclude")
                    .action(ArgAction::Append),
            );
        let m = cmd.get_matches_from([
            "t",
            "--exclude",
            "*",
            "--include",
            "*.csv",
            "--exclude",
            "tmp/*",
        ]);
        assert_eq!(
            in_order(&m),
            vec![
                FilterRule::Exclude("*".into()),
                FilterRule::Include("*.csv".into()),
                FilterRule::Exclude("tmp/*".into()),
            ]
        );
    }
}
