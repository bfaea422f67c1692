//! [`Clouds`]: agents in whichever cloud each region of a plan is (`--provider cloud`). One
//! provider per cloud; each launch goes to the provider of its region's cloud, and every new
//! agent's address is admitted by the other clouds' providers too, so an agent on EC2 and one
//! on GCE reach each other through both clouds' rules.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{LaunchRequest, LaunchedAgent, Provider, ProviderError};

/// One provider per cloud, by the prefix of the regions it launches in (`aws:`).
#[derive(Debug)]
pub struct Clouds {
    members: Vec<(String, Arc<dyn Provider>)>,
}

impl Clouds {
    /// `members`: (region prefix, provider), e.g. `("gcp:", gce)`.
    pub fn new(members: Vec<(String, Arc<dyn Provider>)>) -> Clouds {
        Clouds { members }
    }

    fn member(&self, region: &str) -> Option<&Arc<dyn Provider>> {
        self.members
            .iter()
            .find(|(prefix, _)| region.starts_with(prefix.as_str()))
            .map(|(_, p)| p)
    }
}

#[async_trait]
impl Provider for Clouds {
    fn name(&self) -> &str {
        "cloud"
    }

    async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
        let Some(provider) = self.member(&req.region) else {
            return Err(ProviderError::Capacity {
                agent: req.name.clone(),
                region: req.region.clone(),
                why: "no provider of this job launches in that cloud".into(),
            });
        };
        let mut agent = provider.launch(req).await?;
        let ip = agent.control.ip();
        for (_, other) in &self.members {
            if Arc::ptr_eq(other, provider) {
                continue;
            }
            if let Err(e) = other.admit(ip).await {
                // An agent its peers in other clouds cannot reach is of no use to the job.
                agent.handle.terminate().await;
                return Err(e);
            }
        }
        Ok(agent)
    }

    async fn prepare(&self, regions: &[&str]) -> Result<(), ProviderError> {
        for (prefix, provider) in &self.members {
            let mine: Vec<&str> = regions
                .iter()
                .copied()
                .filter(|r| r.starts_with(prefix.as_str()))
                .collect();
            if !mine.is_empty() {
                provider.prepare(&mine).await?;
            }
        }
        Ok(())
    }

    async fn admit(&self, ip: IpAddr) -> Result<(), ProviderError> {
        for (_, provider) in &self.members {
            provider.admit(ip).await?;
        }
        Ok(())
    }

    async fn sweep(&self) -> Result<Vec<String>, String> {
        let mut removed = Vec::new();
        let mut failed = Vec::new();
        // Every cloud is swept, whatever another answers.
        for (_, provider) in &self.members {
            match provider.sweep().await {
                Ok(r) => removed.extend(r),
                Err(e) => failed.push(format!("{}: {e}", provider.name())),
            }
        }
        match failed.is_empty() {
            true => Ok(removed),
            false => Err(failed.join("; ")),
        }
    }

    fn job_marker(&self) -> Option<String> {
        let markers: Vec<String> = self
            .members
            .iter()
            .filter_map(|(_, p)| p.job_marker())
            .collect();
        (!markers.is_empty()).then(|| markers.join(", and the "))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::AgentHandle;

    /// A cloud that records what it was asked (launches succeed at once).
    #[derive(Debug, Default)]
    struct Recorder {
        cloud: &'static str,
        admitted: Mutex<Vec<IpAddr>>,
        refuse_admission: bool,
        terminated: Arc<Mutex<Vec<String>>>,
    }

    #[derive(Debug)]
    struct Handle(String, Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl AgentHandle for Handle {
        fn id(&self) -> String {
            self.0.clone()
        }
        fn is_alive(&mut self) -> bool {
            true
        }
        async fn terminate(&mut self) {
            self.1.lock().unwrap().push(self.0.clone());
        }
    }

    #[async_trait]
    impl Provider for Recorder {
        fn name(&self) -> &str {
            self.cloud
        }
        async fn launch(&self, req: LaunchRequest) -> Result<LaunchedAgent, ProviderError> {
            Ok(LaunchedAgent {
                name: req.name.clone(),
                region: req.region,
                control: "192.0.2.9:7443".parse().unwrap(),
                handle: Box::new(Handle(req.name, self.terminated.clone())),
            })
        }
        async fn admit(&self, ip: IpAddr) -> Result<(), ProviderError> {
            if self.refuse_admission {
                return Err(ProviderError::NotReady {
                    agent: "peer".into(),
                    why: "no rule".into(),
                });
            }
            self.admitted.lock().unwrap().push(ip);
            Ok(())
        }
    }

    fn request(region: &str) -> LaunchRequest {
        LaunchRequest {
            name: format!("{region}#0"),
            job: "j".into(),
            region: region.into(),
            instance: None,
            token: "t".into(),
            gateway: Arc::new(skyx_agent_api::GatewayIdentity::generate().unwrap()),
        }
    }

    #[tokio::test]
    async fn each_region_goes_to_its_cloud_and_the_others_admit_the_agent() {
        let aws = Arc::new(Recorder {
            cloud: "aws",
            ..Default::default()
        });
        let gcp = Arc::new(Recorder {
            cloud: "gcp",
            ..Default::default()
        });
        let clouds = Clouds::new(vec![
            ("aws:".into(), aws.clone() as Arc<dyn Provider>),
            ("gcp:".into(), gcp.clone() as Arc<dyn Provider>),
        ]);
        let agent = clouds.launch(request("gcp:us-east1-b")).await.unwrap();
        assert_eq!(agent.region, "gcp:us-east1-b");
        // The agent's own cloud admitted it when it launched it; the other cloud does now.
        assert_eq!(*aws.admitted.lock().unwrap(), [agent.control.ip()]);
        assert!(gcp.admitted.lock().unwrap().is_empty());
        let elsewhere = clouds.launch(request("azure:eastus")).await.unwrap_err();
        assert!(matches!(elsewhere, ProviderError::Capacity { .. }));
    }

    #[tokio::test]
    async fn an_agent_the_other_clouds_cannot_admit_is_terminated() {
        let terminated = Arc::new(Mutex::new(Vec::new()));
        let aws = Arc::new(Recorder {
            cloud: "aws",
            refuse_admission: true,
            ..Default::default()
        });
        let gcp = Arc::new(Recorder {
            cloud: "gcp",
            terminated: terminated.clone(),
            ..Default::default()
        });
        let clouds = Clouds::new(vec![
            ("aws:".into(), aws as Arc<dyn Provider>),
            ("gcp:".into(), gcp as Arc<dyn Provider>),
        ]);
        assert!(clouds.launch(request("gcp:us-east1-b")).await.is_err());
        assert_eq!(*terminated.lock().unwrap(), ["gcp:us-east1-b#0"]);
    }
}
