//! The NRI side of the driver: the transport to the container runtime (the
//! NRI connection multiplexer and ttrpc on top of it) and the plugin that
//! registers with the runtime and answers pod events on it.

pub mod mux;
pub mod plugin;
pub mod ttrpc;

#[cfg(test)]
mod tests {
    //! Both ends of a real NRI connection over a socketpair: our test code
    //! plays the runtime with the same transport and the real messages.

    use bytes::Bytes;
    use prost::Message;
    use proto::nri;
    use proto::nri::{plugin_methods, runtime_methods};
    use tokio::net::UnixStream;
    use tokio::sync::mpsc;

    use super::mux::{Mux, MuxError, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN};
    use super::ttrpc::{Code, Status, TtrpcClient, TtrpcError, TtrpcServer};

    fn decode<M: Message + Default>(payload: &Bytes) -> Result<M, Status> {
        M::decode(payload.clone()).map_err(|e| Status::new(Code::InvalidArgument, e.to_string()))
    }

    /// A plugin handler as issue 7 will write one: pod events subscribed,
    /// Synchronize answered with a large reply, everything else unknown.
    async fn plugin(method: String, payload: Bytes) -> Result<Bytes, Status> {
        match method.as_str() {
            plugin_methods::CONFIGURE => {
                let _req: nri::ConfigureRequest = decode(&payload)?;
                let events = nri::Event::RunPodSandbox.mask()
                    | nri::Event::StopPodSandbox.mask()
                    | nri::Event::RemovePodSandbox.mask();
                Ok(nri::ConfigureResponse { events }.encode_to_vec().into())
            }
            plugin_methods::RUN_POD_SANDBOX => {
                let req: nri::RunPodSandboxRequest = decode(&payload)?;
                let pod = req.pod.unwrap_or_default();
                if pod.annotations.get("big").map(String::len) != Some(100_000) {
                    return Err(Status::new(Code::InvalidArgument, "annotation mangled"));
                }
                Ok(nri::RunPodSandboxResponse {}.encode_to_vec().into())
            }
            plugin_methods::SYNCHRONIZE => {
                let update = (0..2000)
                    .map(|i| nri::ContainerUpdate {
                        container_id: format!("container-{i:05}"),
                        ignore_failure: true,
                    })
                    .collect();
                Ok(nri::SynchronizeResponse {
                    update,
                    more: false,
                }
                .encode_to_vec()
                .into())
            }
            other => Err(Status::new(
                Code::Unimplemented,
                format!("{other} not implemented"),
            )),
        }
    }

    #[tokio::test]
    async fn runtime_and_plugin_talk_over_the_mux() {
        let (runtime_end, plugin_end) = UnixStream::pair().expect("socketpair");

        // The runtime's side: client of Plugin on conn 1, server of Runtime
        // on conn 2, reporting each registration to the test.
        let runtime_mux = Mux::new(runtime_end);
        let to_plugin = TtrpcClient::new(runtime_mux.open(PLUGIN_SERVICE_CONN).expect("open 1"));
        let (registered_tx, mut registered) = mpsc::unbounded_channel();
        let runtime_service = TtrpcServer::new(
            nri::RUNTIME_SERVICE,
            move |method: String, payload: Bytes| {
                let registered_tx = registered_tx.clone();
                async move {
                    if method != runtime_methods::REGISTER_PLUGIN {
                        return Err(Status::new(Code::Unimplemented, method));
                    }
                    let req: nri::RegisterPluginRequest = decode(&payload)?;
                    let _ = registered_tx.send(req);
                    Ok(Bytes::from(nri::Empty {}.encode_to_vec()))
                }
            },
        );
        let runtime_conn2 = runtime_mux.open(RUNTIME_SERVICE_CONN).expect("open 2");
        tokio::spawn(runtime_service.serve(runtime_conn2));
        runtime_mux.unblock();

        // The plugin's side, as issue 7 will set it up.
        let plugin_mux = Mux::new(plugin_end);
        let plugin_conn1 = plugin_mux.open(PLUGIN_SERVICE_CONN).expect("open 1");
        let served =
            tokio::spawn(TtrpcServer::new(nri::PLUGIN_SERVICE, plugin).serve(plugin_conn1));
        let to_runtime = TtrpcClient::new(plugin_mux.open(RUNTIME_SERVICE_CONN).expect("open 2"));
        plugin_mux.unblock();

        // Registration on conn 2.
        let request = nri::RegisterPluginRequest {
            plugin_name: "sriov-dra".into(),
            plugin_idx: "10".into(),
            nri_version: String::new(),
        };
        let reply = to_runtime
            .call(
                nri::RUNTIME_SERVICE,
                "RegisterPlugin",
                request.encode_to_vec().into(),
            )
            .await
            .expect("RegisterPlugin");
        assert!(reply.is_empty(), "Empty encodes to no bytes");
        assert_eq!(registered.recv().await, Some(request));

        // Configure on conn 1: the event mask comes back in field 2.
        let configure = nri::ConfigureRequest {
            runtime_name: "containerd".into(),
            ..Default::default()
        };
        let reply = to_plugin
            .call(
                nri::PLUGIN_SERVICE,
                "Configure",
                configure.encode_to_vec().into(),
            )
            .await
            .expect("Configure");
        assert_eq!(reply, Bytes::from_static(&[0x10, 0x07]));

        // A request and a reply far larger than one mux frame, both ways.
        let mut pod = nri::PodSandbox {
            uid: "pod-uid".into(),
            ..Default::default()
        };
        pod.annotations.insert("big".into(), "x".repeat(100_000));
        to_plugin
            .call(
                nri::PLUGIN_SERVICE,
                plugin_methods::RUN_POD_SANDBOX,
                nri::RunPodSandboxRequest { pod: Some(pod) }
                    .encode_to_vec()
                    .into(),
            )
            .await
            .expect("RunPodSandbox");
        let reply = to_plugin
            .call(
                nri::PLUGIN_SERVICE,
                plugin_methods::SYNCHRONIZE,
                Bytes::new(),
            )
            .await
            .expect("Synchronize");
        let sync = nri::SynchronizeResponse::decode(reply).expect("decodes");
        assert_eq!(sync.update.len(), 2000);
        assert_eq!(sync.update[1999].container_id, "container-01999");

        // Unknown methods and services answer UNIMPLEMENTED (code 12), which
        // is what makes a new runtime fall back to StateChange.
        for (service, method) in [
            (nri::PLUGIN_SERVICE, "NoSuchMethod"),
            ("other.Service", "Configure"),
        ] {
            match to_plugin.call(service, method, Bytes::new()).await {
                Err(TtrpcError::Status(status)) => assert_eq!(status.code, Code::Unimplemented),
                other => panic!("{service}/{method}: expected UNIMPLEMENTED, got {other:?}"),
            }
        }

        // Concurrent calls each get their own answer.
        let to_plugin = std::sync::Arc::new(to_plugin);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let client = to_plugin.clone();
            calls.spawn(async move {
                client
                    .call(nri::PLUGIN_SERVICE, plugin_methods::CONFIGURE, Bytes::new())
                    .await
            });
        }
        while let Some(reply) = calls.join_next().await {
            let reply = reply.expect("join").expect("Configure");
            assert_eq!(reply, Bytes::from_static(&[0x10, 0x07]));
        }

        // The runtime goes away: the plugin's server ends and calls fail.
        drop(to_plugin);
        runtime_mux.close().await;
        drop(runtime_mux);
        let ended = served.await.expect("join");
        assert!(
            matches!(ended, TtrpcError::Mux(MuxError::Closed)),
            "{ended:?}"
        );
        assert!(matches!(
            to_runtime
                .call(
                    nri::RUNTIME_SERVICE,
                    runtime_methods::REGISTER_PLUGIN,
                    Bytes::new()
                )
                .await,
            Err(TtrpcError::Mux(MuxError::Closed))
        ));
    }
}
