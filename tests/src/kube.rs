//! The fake Kubernetes API server of `fixtures/fake_kube_api.py`, for the pod watch: pods are
//! applied and deleted through its control API and reach the agent as real list and watch
//! JSON, and a kubeconfig points the agent at it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{fixtures, wait};

/// A running fake API server; killed on drop.
pub struct FakeKubeApi {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl FakeKubeApi {
    pub fn start(python: &Path) -> FakeKubeApi {
        let dir = fixtures::tempdir("kube-api");
        let port_file = dir.path().join("port");
        let mut child = Command::new(python)
            .arg(fixtures::fixture("fake_kube_api.py"))
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("cannot start fake_kube_api.py");
        let port = wait::port_file(
            &mut child,
            &port_file,
            &dir.path().join("stderr"),
            "fake_kube_api.py",
            Duration::from_secs(20),
        );
        let api = FakeKubeApi { child, dir, port };
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: agent\n  user:\n    token: test-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\n"
        );
        std::fs::write(api.kubeconfig(), kubeconfig).expect("write kubeconfig");
        api
    }

    /// A kubeconfig for this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Adds or changes a pod (an ADDED or MODIFIED event).
    pub fn apply(&self, pod: &Value) {
        self.call("POST", "/fake/apply", &pod.to_string());
    }

    /// Deletes a pod (a DELETED event).
    pub fn delete(&self, uid: &str) {
        self.call(
            "POST",
            "/fake/delete",
            &serde_json::json!({ "uid": uid }).to_string(),
        );
    }

    /// Ends every open watch, as an API server restart does.
    pub fn drop_watches(&self) {
        self.call("POST", "/fake/drop", "{}");
    }

    /// The next `count` pod requests fail with 500.
    pub fn fail_next(&self, count: u32) {
        self.call("POST", "/fake/fail", &format!("{{\"count\": {count}}}"));
    }

    /// The pod requests served so far (path and query).
    pub fn requests(&self) -> Vec<String> {
        let body = self.call("GET", "/fake/requests", "");
        serde_json::from_str(&body).expect("request list")
    }

    /// Waits until a watch request (not a list) has been served `n` times.
    pub fn wait_watches(&self, n: usize) {
        let watching = wait::poll_until(Duration::from_secs(30), || {
            let watches = self
                .requests()
                .iter()
                .filter(|r| r.contains("watch=true"))
                .count();
            (watches >= n).then_some(())
        });
        assert!(watching.is_some(), "no watch #{n}: {:?}", self.requests());
    }

    fn call(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect fake API");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        body.to_string()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Pod object as the API serves it: on `node`, owned by a Deployment's ReplicaSet, with a
/// running container of this id.
pub fn pod(
    uid: &str,
    name: &str,
    namespace: &str,
    node: &str,
    container_id: &str,
    labels: Value,
) -> Value {
    let mut labels = labels;
    labels["pod-template-hash"] = "5d8f7c".into();
    let deployment = name.rsplitn(3, '-').last().unwrap_or(name).to_string();
    serde_json::json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid, "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{deployment}-5d8f7c"), "uid": "rs", "controller": true}]
        },
        "spec": {"nodeName": node, "serviceAccountName": "default",
                 "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "main", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "containerID": format!("containerd://{container_id}")}]}
    })
}
