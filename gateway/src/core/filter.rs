//! `--include` / `--exclude` filters, as the AWS CLI applies them.
//!
//! Every object is included to start with; the filters are then applied in the order given on
//! the command line and the last one that matches an object's key (relative to the source
//! prefix) decides. So `--exclude '*' --include '*.csv'` copies only CSV files, and an
//! `--include` alone changes nothing.
//!
//! Patterns are Python's `fnmatch` (what the AWS CLI uses), matched against the whole relative
//! key, case-sensitively, one Unicode character at a time:
//! - `*` matches any run of characters, `/` included (`*.csv` takes `a/b.csv`);
//! - `?` matches one character (`caf?` takes `café`);
//! - `[seq]` one character in `seq` (ranges `a-z`), `[!seq]` one not in it; a `[` with no
//!   closing `]` is a literal `[`; a `^` and a `\` are literal everywhere.
//!
//! Pure: no IO.

/// One `--include` or `--exclude`, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterRule {
    Include(String),
    Exclude(String),
}

/// The filters of a copy: which relative keys it takes.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// (whether a match includes, the pattern), in command-line order.
    rules: Vec<(bool, Pattern)>,
}

impl KeyFilter {
    /// The filters in the order given. Every `fnmatch` pattern is valid, so this cannot fail.
    pub fn new(rules: &[FilterRule]) -> KeyFilter {
        KeyFilter {
            rules: rules
                .iter()
                .map(|r| match r {
                    FilterRule::Include(p) => (true, Pattern::parse(p)),
                    FilterRule::Exclude(p) => (false, Pattern::parse(p)),
                })
                .collect(),
        }
    }

    /// Whether the object at `relative_key` is copied: the last matching filter decides, and
    /// with none matching it is.
    pub fn accepts(&self, relative_key: &str) -> bool {
        self.rules
            .iter()
            .rev()
            .find(|(_, p)| p.matches(relative_key))
            .is_none_or(|(include, _)| *include)
    }
}

/// Which objects a copy takes: the key filters, and bounds on size and modification time
/// (`--min-size`, `--max-size`, and `--min-age`/`--max-age` turned into times at the edge,
/// where the clock is).
#[derive(Debug, Clone, Default)]
pub struct ObjectFilter {
    pub keys: KeyFilter,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Only objects last modified at or before this time (`--min-age`).
    pub modified_before: Option<std::time::SystemTime>,
    /// Only objects last modified at or after this time (`--max-age`).
    pub modified_after: Option<std::time::SystemTime>,
}

impl ObjectFilter {
    /// Only key filters.
    pub fn keys(keys: KeyFilter) -> ObjectFilter {
        ObjectFilter {
            keys,
            ..ObjectFilter::default()
        }
    }

    /// Whether the filter judges an object by its size or time, not only its key: a copy may
    /// differ from its source there (a destination's own time above all).
    pub fn judges_by_object(&self) -> bool {
        self.min_size.is_some()
            || self.max_size.is_some()
            || self.modified_before.is_some()
            || self.modified_after.is_some()
    }

    /// Whether the object at `relative_key` of `size` bytes, last modified at `modified`, is
    /// taken. With a time bound, an object whose time is unknown is not.
    pub fn accepts(
        &self,
        relative_key: &str,
        size: u64,
        modified: Option<std::time::SystemTime>,
    ) -> bool {
        let in_time =
            |bound: Option<std::time::SystemTime>,
             ok: fn(&std::time::SystemTime, &std::time::SystemTime) -> bool| {
                bound.is_none_or(|b| modified.is_some_and(|m| ok(&m, &b)))
            };
        self.min_size.is_none_or(|min| size >= min)
            && self.max_size.is_none_or(|max| size <= max)
            && in_time(self.modified_before, |m, b| m <= b)
            && in_time(self.modified_after, |m, b| m >= b)
            && self.keys.accepts(relative_key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    One,
    /// `*` (runs of them are one).
    Any,
    /// `[...]`: inclusive ranges (a single character is a range of one), negated by `!`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this single-character token takes `c` (never asked of `Any`).
    fn takes(&self, c: char) -> bool {
        match self {
            Token::Char(t) => *t == c,
            Token::One => true,
            Token::Any => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// A parsed `fnmatch` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Token>);

impl Pattern {
    /// Parses as Python's `fnmatch.translate` reads a pattern.
    fn parse(pattern: &str) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Any) {
                        tokens.push(Token::Any);
                    }
                }
                '?' => tokens.push(Token::One),
                '[' => match class(&chars, i) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => tokens.push(Token::Char('[')),
                },
                c => tokens.push(Token::Char(c)),
            }
        }
        Pattern(tokens)
    }

    /// Whether the whole of `text` matches. Every token but `*` takes exactly one character,
    /// so backtracking to the last `*` is enough (linear space, O(pattern × text) time).
    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let tokens = &self.0;
        let (mut t, mut p) = (0, 0);
        // Where the last `*` was, and the text position it was last tried against.
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Any) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(token) if token.takes(text[t]) => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        // Let the `*` take one more character and retry after it.
                        star = Some((sp, st + 1));
                        p = sp + 1;
                        t = st + 1;
                    }
                    None => return false,
                },
            }
        }
        tokens[p..].iter().all(|token| *token == Token::Any)
    }
}

/// The class starting after a `[` at `start`, and where the pattern goes on after its `]`;
/// `None` when it never closes (then the `[` is literal). A `]` first in the class (after an
/// optional `!`) is a member; `a-z` is a range and one whose ends are reversed matches nothing.
fn class(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut j = start;
    let negated = chars.get(j) == Some(&'!');
    if negated {
        j += 1;
    }
    let first = j;
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    while j < chars.len() && chars[j] != ']' {
        j += 1;
    }
    if j >= chars.len() {
        return None;
    }
    let members = &chars[first..j];
    let mut ranges = Vec::new();
    let mut k = 0;
    while k < members.len() {
        if k + 2 < members.len() && members[k + 1] == '-' {
            ranges.push((members[k], members[k + 2]));
            k += 3;
        } else {
            ranges.push((members[k], members[k]));
            k += 1;
        }
    }
    Some((Token::Class { negated, ranges }, j + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Pattern::parse(pattern).matches(text)
    }

    #[test]
    fn patterns_match_as_python_fnmatch_does() {
        // (pattern, text, what Python's fnmatch.fnmatchcase answers)
        let cases = [
            ("*", "", true),
            ("*", "a/b/c", true),
            ("*.csv", "a.csv", true),
            ("*.csv", "dir/sub/a.csv", true),
            ("*.csv", "a.csv.gz", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a**", "a", true),
            ("logs/**", "logs/2026/x", true),
            ("?", "é", true),
            ("caf?.txt", "café.txt", true),
            ("caf?.txt", "cafe.txt", true),
            ("caf?.txt", "caf.txt", false),
            ("[é]", "é", true),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[!a-c]x", "dx", true),
            ("[!a-c]x", "ax", false),
            ("[]]", "]", true),
            ("[!]]", "a", true),
            ("[a-]", "-", true),
            ("[z-a]", "m", false),
            ("[^a]", "^", true),
            ("[^a]", "b", false),
            ("a[", "a[", true),
            ("a[b", "a[b", true),
            ("\\*", "\\x", true),
            ("*.CSV", "a.csv", false),
            ("?", "ab", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(m(pattern, text), want, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn sizes_and_times_bound_what_is_taken() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        let f = ObjectFilter {
            min_size: Some(10),
            max_size: Some(100),
            modified_after: at(1_000),
            modified_before: at(2_000),
            ..ObjectFilter::default()
        };
        assert!(f.accepts("k", 10, at(1_000)));
        assert!(f.accepts("k", 100, at(2_000)));
        assert!(!f.accepts("k", 9, at(1_500)));
        assert!(!f.accepts("k", 101, at(1_500)));
        assert!(!f.accepts("k", 50, at(999)));
        assert!(!f.accepts("k", 50, at(2_001)));
        assert!(!f.accepts("k", 50, None), "a time bound needs a time");
        assert!(ObjectFilter::default().accepts("k", 0, None));
        let keys = ObjectFilter::keys(KeyFilter::new(&[FilterRule::Exclude("*.tmp".into())]));
        assert!(!keys.accepts("a.tmp", 1, None) && keys.accepts("a", 1, None));
    }

    #[test]
    fn the_last_matching_filter_decides() {
        let inc = |p: &str| FilterRule::Include(p.into());
        let exc = |p: &str| FilterRule::Exclude(p.into());
        let only_csv = KeyFilter::new(&[exc("*"), inc("*.csv")]);
        assert!(only_csv.accepts("a.csv") && only_csv.accepts("d/b.csv"));
        assert!(!only_csv.accepts("a.json"));
        // The other order: the exclude comes last and takes everything.
        let nothing = KeyFilter::new(&[inc("*.csv"), exc("*")]);
        assert!(!nothing.accepts("a.csv"));
        // An include alone restricts nothing.
        assert!(KeyFilter::new(&[inc("*.csv")]).accepts("a.json"));
        let f = KeyFilter::new(&[exc("logs/*"), inc("logs/keep-*"), exc("*.tmp")]);
        assert!(!f.accepts("logs/x"));
        assert!(f.accepts("logs/keep-1"));
        assert!(!f.accepts("logs/keep-1.tmp"));
        assert!(f.accepts("data"));
        assert!(KeyFilter::default().accepts("anything"));
    }
}
