//! The name a job's cloud resources carry: one that every cloud's naming rules accept, and
//! that a sweep run anywhere later derives from the job again.

/// The value of the `skyx-job` label (and the network tag and name prefix) of `job` on GCE
/// and Azure: GCE's label values and names allow lowercase letters, digits and `-` (names
/// must start with a letter, end with a letter or digit, and hold at most 63 characters). A job name that does
/// not fit as it is keeps its first part and gains a hash of the whole, so two jobs never
/// share a label.
pub fn job_label(job: &str) -> String {
    let mut slug: String = job
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    let fits = !slug.is_empty() && slug == job && slug.len() <= 40 && !slug.ends_with('-');
    if !fits {
        // FNV-1a: stable across builds and machines (a sweep elsewhere finds the same label).
        let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        slug.truncate(30);
        slug = format!("{}-{:08x}", slug.trim_end_matches('-'), hash as u32);
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fit_gce_and_never_collide() {
        assert_eq!(job_label("cp-data-1a2b-18c"), "cp-data-1a2b-18c");
        let odd = job_label("cp-My_Bucket/with.dots-1a2b-18c0000");
        assert!(
            odd.len() <= 40 && odd.starts_with("cp-my-bucket-with-dots"),
            "{odd}"
        );
        let long = "run-".to_string() + &"x".repeat(80);
        let other = "run-".to_string() + &"x".repeat(79) + "y";
        assert_ne!(job_label(&long), job_label(&other));
        for label in [odd, job_label(&long), job_label("A-")] {
            assert!(
                label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{label}"
            );
            assert!(!label.ends_with('-'), "{label}");
        }
    }
}
