//! The operator's page in a real browser: headless Chromium driven over WebDriver by
//! chromedriver (Debian's `chromium` and `chromium-driver`). The test creates a PIN by clicking,
//! copies the blocks off the page into context files, forms a cluster with real agents, and
//! watches the status view follow it by long-poll, without a reload.
//!
//! Without the browser the test is skipped with its reason, unless `CI` is set: there it
//! fails. With `CLUSTERCTX_SCREENSHOTS=<dir>` it also writes the screenshots of the docs.

use crate::support::{self, Node};

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clusterctx::{
    agent::{config::Overrides, contextualize::Finished, master_ready::Announced, state::Role},
    seal::Sealer,
    secret::{ClusterSecret, Pin},
    server::{self, Config},
};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The most any one step may take: a browser starting on a loaded 2-core machine included.
const STEP: Duration = Duration::from_secs(30);
/// The most the whole test may take.
const WHOLE: Duration = Duration::from_secs(180);

/// chromedriver on a loopback port; killed when dropped, so a failing test leaves no process.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The browser and its driver, or why they cannot be used.
fn browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium =
        find_in_path("chromium").ok_or("`chromium` is not on PATH (Debian package `chromium`)")?;
    let driver = find_in_path("chromedriver")
        .ok_or("`chromedriver` is not on PATH (Debian package `chromium-driver`)")?;
    Ok((chromium, driver))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver(path: &Path) -> Driver {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    until("chromedriver answers /status", || async {
        let ready = http.get(format!("{}/status", driver.url)).send().await;
        let Ok(ready) = ready else { return None };
        let body: Value = ready.json().await.ok()?;
        body["value"]["ready"].as_bool().filter(|ready| *ready)
    })
    .await;
    driver
}

/// Polls `check` until it gives a value, for at most [`STEP`].
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_browser(chromium: &Path, driver: &Driver, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new",
                // Root in CI containers has no user namespace for the sandbox.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
                "--no-first-run",
                "--no-default-browser-check",
                // Tests talk to loopback only: no updates, sync, metrics or lookups elsewhere,
                // and no name resolves but the loopback address.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless chromium")
}

async fn script(client: &Client, body: &str) -> Value {
    client.execute(body, vec![]).await.expect(body)
}

async fn text_of(client: &Client, selector: &str) -> String {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until the script `condition` answers true in the page.
async fn until_page(client: &Client, what: &str, condition: &str) {
    until(what, || async {
        script(client, condition).await.as_bool().filter(|yes| *yes)
    })
    .await;
}

async fn click(client: &Client, selector: &str) {
    client
        .find(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
}

/// The PNG of the window at `width` x `height`, written to the screenshots directory if asked.
async fn screenshot(client: &Client, name: &str, width: u32, height: u32) {
    let Some(dir) = std::env::var_os("CLUSTERCTX_SCREENSHOTS") else {
        return;
    };
    client.set_window_size(width, height).await.unwrap();
    // A resize lays out again; the next animation frame has painted it.
    client
        .execute_async(
            "const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done));",
            vec![],
        )
        .await
        .unwrap();
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(&dir).join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The agents' schedule, short: the PIN, role and URL come from the blocks off the page.
fn schedule() -> Overrides {
    Overrides {
        tries: Some(100),
        interval: Some(Duration::from_millis(200)),
        request_timeout: Some(Duration::from_secs(5)),
        ..Overrides::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_pin_and_watch_the_cluster_form() {
    let started = Instant::now();
    let (chromium, driver_path) = match browser() {
        Ok(found) => found,
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the browser test cannot run: {reason}; contrib/ci/install-deps installs both")
        }
        Err(reason) => {
            eprintln!("skipping the browser test: {reason}");
            return;
        }
    };
    // The WebDriver calls themselves have no time limit: the whole scenario has one.
    tokio::time::timeout(WHOLE, scenario(&chromium, &driver_path))
        .await
        .unwrap_or_else(|_| panic!("the browser test took longer than {WHOLE:?}"));
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

async fn scenario(chromium: &Path, driver_path: &Path) {
    let server = server::spawn(Config::default()).await.unwrap();
    let url = server.url();
    let driver = start_driver(driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let client = open_browser(chromium, &driver, profile.path()).await;

    client.goto(&format!("{url}/")).await.unwrap();
    // Set once in this document: a reload or a navigation away would lose it.
    let marker = script(
        &client,
        "window.loadMarker = crypto.randomUUID(); return window.loadMarker;",
    )
    .await;

    // The secret is made in the browser, into the blocks, and out again when unticked.
    click(&client, "#create").await;
    until_page(&client, "the PIN is shown", "return !document.getElementById('created').hidden && document.getElementById('pin').textContent.length > 0").await;
    let pin = text_of(&client, "#pin").await;
    assert!(clusterctx::protocol::is_valid_pin(&pin), "{pin:?}");
    let token: String = client
        .find(Locator::Id("admin-token"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("a value");
    assert!(!token.is_empty());
    assert!(text_of(&client, "#token-warning")
        .await
        .contains("It will not be shown again"));
    assert!(!text_of(&client, "#expires").await.is_empty());

    click(&client, "#seal").await;
    let sealed_block = text_of(&client, "#block-worker").await;
    let secret = sealed_block
        .lines()
        .find_map(|line| line.strip_prefix("cvm_cluster_secret="))
        .expect("a cluster secret in the block");
    assert_eq!(secret.len(), 22, "{secret:?}");
    let secret = ClusterSecret::parse(secret).expect("a valid cluster secret");
    for other in ["#block-master", "#block-auto"] {
        assert!(
            text_of(&client, other).await.contains(secret.expose()),
            "one secret for all blocks"
        );
    }
    screenshot(&client, "create-desktop.png", 1280, 1500).await;
    // At phone width one column fits the window: nothing to scroll sideways but the blocks.
    client.set_window_size(390, 900).await.unwrap();
    until_page(
        &client,
        "the page fits a phone's width",
        "return window.innerWidth < 600 && document.documentElement.scrollWidth <= window.innerWidth;",
    )
    .await;
    screenshot(&client, "create-phone.png", 390, 1700).await;
    click(&client, "#seal").await;

    let master_block = text_of(&client, "#block-master").await;
    let worker_block = text_of(&client, "#block-worker").await;
    let auto_block = text_of(&client, "#block-auto").await;
    for (block, role) in [
        (&master_block, "yes"),
        (&worker_block, "no"),
        (&auto_block, "auto"),
    ] {
        assert!(!block.contains("cvm_cluster_secret"), "{block}");
        assert_eq!(
            block.lines().collect::<Vec<_>>(),
            [
                "[ucernvm-begin]",
                &format!("cvm_cluster_pin={pin}"),
                &format!("cvm_cluster_master={role}"),
                &format!("cvm_service_url={url}"),
                "[ucernvm-end]",
            ]
        );
    }

    // A value sealed with the cluster secret: the status view names it but does not show it.
    let sealed = Sealer::new(&secret, &Pin::new(pin.as_str()))
        .seal("note", "not for the page")
        .unwrap();
    let http = reqwest::Client::new();
    assert_eq!(
        support::server::post_key(&http, &url, &pin, "note", &sealed).await,
        201
    );

    // The status view by keyboard: the PIN typed into its form, Enter to submit.
    let link = client.find(Locator::Id("status-link")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap(),
        Some(format!("#status/{pin}"))
    );
    click(&client, "#nav-status").await;
    let field = client.find(Locator::Id("status-pin")).await.unwrap();
    field.send_keys(&format!("{pin}\u{e007}")).await.unwrap();
    until_page(
        &client,
        "the status view waits for master_ip",
        "return document.getElementById('status-live').textContent.includes('Waiting for master_ip');",
    )
    .await;
    assert_eq!(text_of(&client, "tr[data-key='note'] td").await, "sealed");
    let page = script(&client, "return document.body.innerText;").await;
    assert!(
        !page.as_str().unwrap().contains(&sealed),
        "the sealed value is not on the page"
    );

    let master = Node::new(&format!("[amiconfig]\nplugins=cernvm\n\n{master_block}"));
    let worker = Node::new(&format!(
        "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n{worker_block}"
    ));
    let worker_run = tokio::spawn(support::contextualize_files(
        worker.files.clone(),
        worker.state_dir(),
        schedule(),
    ));
    let finished = support::contextualize(&master, &schedule()).await.unwrap();
    assert!(
        matches!(finished, Finished::Contextualized { role: Role::Master }),
        "{finished:?}"
    );
    until_page(
        &client,
        "the status view shows master_ip",
        "return document.querySelector(\"tr[data-key='master_ip'] td\")?.textContent === '127.0.0.1';",
    )
    .await;
    // Parked on master_ready before the master announces it, so the long-poll is what tells.
    until_page(
        &client,
        "the status view waits for master_ready",
        "return document.getElementById('status-live').textContent.includes('Waiting for master_ready');",
    )
    .await;
    assert_eq!(
        support::master_ready(&master, &schedule()).await.unwrap(),
        Announced::Published
    );
    until_page(
        &client,
        "the status view shows master_ready",
        "return document.querySelector(\"tr[data-key='master_ready']\") !== null;",
    )
    .await;
    let finished = tokio::time::timeout(STEP, worker_run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(finished, Finished::Contextualized { role: Role::Worker }),
        "{finished:?}"
    );
    assert!(
        worker.read(0).contains("my_master_ip=127.0.0.1\n"),
        "{}",
        worker.read(0)
    );
    screenshot(&client, "status-phone.png", 390, 1100).await;
    screenshot(&client, "status-desktop.png", 1280, 1000).await;

    // The same document all along, and it learned of both keys by parking on them.
    assert_eq!(
        script(&client, "return window.loadMarker;").await,
        marker,
        "the page reloaded"
    );
    for key in ["master_ip", "master_ready"] {
        until_page(
            &client,
            &format!("the page has long-polled {key}"),
            &format!(
                "return performance.getEntriesByType('resource')\
                 .some(e => e.name.endsWith('/keys/{key}?wait=30'));"
            ),
        )
        .await;
    }

    client.close().await.unwrap();
    drop(driver);
    server.shutdown().await;
}
