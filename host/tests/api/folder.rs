//! The fleet's registry outranks a host's plugins folder: an old file touched, rewritten
//! or copied back on one host never rolls the fleet back; only bytes new to the fleet
//! install from a folder, and an operator installs an old version through the admin API.

use crate::crash::Server;
use crate::helpers::*;
use serde_json::Value;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

/// The sum of `wasaga_plugin_file_events_total` for `step` and `outcome` on `api`.
async fn file_events(api: &Api, step: &str, outcome: &str) -> u64 {
    let text = api
        .http
        .get(api.url("/metrics"))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let (step, outcome) = (format!("step=\"{step}\""), format!("outcome=\"{outcome}\""));
    text.lines()
        .filter(|line| line.starts_with("wasaga_plugin_file_events_total{"))
        .filter(|line| line.contains(&step) && line.contains(&outcome))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

async fn digest_served(api: &Api, step: &str) -> String {
    api.plugin(step).await.expect("listed")["digest"].as_str().expect("digest").to_owned()
}

async fn serve_everywhere(hosts: &[&Api], step: &str, digest: &str) {
    eventually(WAIT, &format!("every host serves {digest}"), async || {
        for api in hosts {
            if digest_served(api, step).await != digest {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_file_touched_or_rewritten_on_one_host_does_not_roll_the_fleet_back() {
    let url = fresh_pg_database().await;
    let dirs = host_dirs(2);
    let token = format!("t-{}", rand_id());
    let a = Server::start_env(dirs[0].path(), Some(&url), &token, &[]);
    let b = Server::start_env(dirs[1].path(), Some(&url), &token, &[]);
    a.api.wait_ready().await;
    b.api.wait_ready().await;
    let hosts = [&a.api, &b.api];
    let v1 = digest_served(&a.api, "payment").await;

    // v2 arrives as a new file in host A's folder: new to the fleet, so it installs.
    let folder_a = dirs[0].path().join("plugins");
    std::fs::write(folder_a.join(".payment.wasm.tmp"), component("payment-v2")).expect("write");
    std::fs::rename(folder_a.join(".payment.wasm.tmp"), folder_a.join("payment.wasm")).expect("rename");
    let v2 = wasaga_host::runtime::digest_of(&component("payment-v2"));
    serve_everywhere(&hosts, "payment", &v2).await;
    let history_before: Vec<Value> =
        a.api.admin_get("/api/admin/plugins/payment/history").await.json().await.expect("history");

    // Host B's folder still holds v1. Touched (`touch -m`: the kernel reports a change
    // of mtime alone as a change of data): read, known to the fleet, left alone.
    let installed = file_events(&b.api, "payment", "installed").await;
    let old_file = dirs[1].path().join("plugins/payment.wasm");
    let touch = |times: std::fs::FileTimes| {
        let file = std::fs::File::options().write(true).open(&old_file).expect("open");
        file.set_times(times).expect("touch");
    };
    let later = |secs| SystemTime::now() + Duration::from_secs(secs);
    touch(std::fs::FileTimes::new().set_modified(later(60)));
    eventually(WAIT, "host B judged the touched file", async || file_events(&b.api, "payment", "known").await >= 1)
        .await;
    // `touch` (both times: an attribute event), then `touch -m` again: metadata only.
    touch(std::fs::FileTimes::new().set_accessed(later(120)).set_modified(later(120)));
    eventually(WAIT, "host B saw the attribute change", async || {
        file_events(&b.api, "payment", "metadata_only").await >= 1
    })
    .await;
    touch(std::fs::FileTimes::new().set_modified(later(180)));
    eventually(WAIT, "host B saw the mtime change", async || {
        file_events(&b.api, "payment", "metadata_only").await >= 2
    })
    .await;
    // Rewritten with the same bytes: nothing changed.
    std::fs::write(&old_file, component("payment")).expect("rewrite");
    eventually(WAIT, "host B read the rewritten file", async || {
        file_events(&b.api, "payment", "metadata_only").await >= 3
    })
    .await;
    // The fleet's v2 written there, then v1 copied back in (write, then rename): the
    // first is what B serves, the second is known to the fleet; neither installs.
    // (B counted its startup file as unchanged already: wait for one more.)
    let unchanged = file_events(&b.api, "payment", "unchanged").await;
    std::fs::write(&old_file, component("payment-v2")).expect("write v2");
    eventually(WAIT, "host B read v2", async || file_events(&b.api, "payment", "unchanged").await > unchanged).await;
    let folder_b = dirs[1].path().join("plugins");
    std::fs::write(folder_b.join(".payment.wasm.tmp"), component("payment")).expect("write");
    std::fs::rename(folder_b.join(".payment.wasm.tmp"), &old_file).expect("rename");
    eventually(WAIT, "host B judged the copied file", async || file_events(&b.api, "payment", "known").await >= 2)
        .await;
    assert_eq!(file_events(&b.api, "payment", "installed").await, installed, "host B installed a file");
    for api in hosts {
        assert_eq!(digest_served(api, "payment").await, v2, "a host serves the old file");
    }
    let history_after: Vec<Value> =
        a.api.admin_get("/api/admin/plugins/payment/history").await.json().await.expect("history");
    assert_eq!(history_after, history_before, "the fleet's registry changed");

    // An operator who wants v1 back says so: an upload of the same bytes installs it.
    let uploaded = b.api.upload("payment", component("payment")).await;
    assert_eq!(uploaded.status(), 200);
    serve_everywhere(&hosts, "payment", &v1).await;
    a.kill();
    b.kill();
}
