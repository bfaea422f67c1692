//! The CLI's own error types and the exit code of every failure: 0 success; 1 the operation
//! failed (or some objects did); 2 bad input (flags, files, URLs, regions, missing buckets or
//! paths, refused credentials); 3 no plan satisfies the request; 130 interrupted.

/// A usage error: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Some objects failed: exit code 1 after the summary.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} objects failed")]
pub struct PartialFailure {
    pub failed: usize,
    pub total: u64,
}

/// Source objects were skipped as unsafe to write (named on stderr as they were found): exit
/// code 1 after the rest were copied.
#[derive(Debug, thiserror::Error)]
#[error("{0} source objects were skipped (named above)")]
pub struct SkippedObjects(pub usize);

/// `check` found the trees different: exit 1 after the report.
#[derive(Debug, thiserror::Error)]
#[error("the trees differ in {differ} of {total} objects")]
pub struct TreesDiffer {
    pub differ: usize,
    pub total: usize,
}

/// A sync would have deleted more than `--max-delete` allows, so it deleted nothing: exit 1.
#[derive(Debug, thiserror::Error)]
#[error("--max-delete {max}: the sync would delete {would} objects; deleted none")]
pub struct TooManyDeletions {
    pub max: usize,
    pub would: usize,
}

/// Exit code for a failure, chosen from what failed: 2 for bad input (flags, URLs, regions,
/// missing buckets or paths, refused credentials), 3 for an infeasible plan, 130 for an
/// interrupted copy, 1 when the copy itself failed or some objects did.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use skyx_store::ErrorKind;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<skyx_planner::PlanError>() {
            return match e {
                skyx_planner::PlanError::Infeasible { .. }
                | skyx_planner::PlanError::Disconnected { .. }
                | skyx_planner::PlanError::EndpointRefused { .. } => 3,
                skyx_planner::PlanError::InvalidRequest(_) => 2,
                _ => 1,
            };
        }
        if cause.downcast_ref::<PartialFailure>().is_some()
            || cause.downcast_ref::<SkippedObjects>().is_some()
            || cause.downcast_ref::<TooManyDeletions>().is_some()
            || cause.downcast_ref::<TreesDiffer>().is_some()
        {
            return 1;
        }
        if cause.downcast_ref::<BadInput>().is_some()
            || cause.downcast_ref::<skyx_catalog::CatalogError>().is_some()
            || cause.downcast_ref::<skyx_store::UrlError>().is_some()
        {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<skyx_gateway::ListError>() {
            return match e {
                skyx_gateway::ListError::Store(s) => store_exit(s.kind),
                _ => 2,
            };
        }
        if let Some(e) = cause.downcast_ref::<skyx_store::StoreError>() {
            return store_exit(e.kind);
        }
        if let Some(e) = cause.downcast_ref::<skyx_gateway::CopyError>() {
            return match e {
                skyx_gateway::CopyError::Interrupted { .. } => 130,
                skyx_gateway::CopyError::ResumeMismatch { .. } => 2,
                skyx_gateway::CopyError::Store(s) => store_exit(s.kind),
                skyx_gateway::CopyError::Listing { source, .. } => store_exit(source.kind),
                _ => 1,
            };
        }
        if let Some(skyx_pipeline::JointError::Infeasible(_)) = cause.downcast_ref() {
            return 3;
        }
        if let Some(e) = cause.downcast_ref::<skyx_pipeline_run::PipelineRunError>() {
            return match e {
                skyx_pipeline_run::PipelineRunError::Interrupted(_) => 130,
                _ => 1,
            };
        }
        if let Some(skyx_gateway::PathsError::BadRequest(_)) = cause.downcast_ref() {
            return 2;
        }
        if let Some(e) = cause.downcast_ref::<skyx_sky::SkyError>() {
            return match e {
                skyx_sky::SkyError::BadOptions(_)
                | skyx_sky::SkyError::NotRoot
                | skyx_sky::SkyError::AlreadyUp { .. }
                | skyx_sky::SkyError::NoManifest { .. }
                | skyx_sky::SkyError::ToolMissing { .. } => 2,
                _ => 1,
            };
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return 2;
        }
    }
    fn store_exit(kind: ErrorKind) -> u8 {
        match kind {
            ErrorKind::NotFound
            | ErrorKind::BucketNotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::InvalidInput => 2,
            _ => 1,
        }
    }
    // What is left are the CLI's own checks of flags and files.
    2
}
