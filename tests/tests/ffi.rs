//! The C ABI from real callers: a C program (linked dynamically, statically, and run
//! under valgrind memcheck), a C++ RAII wrapper, a Go cgo program and a Python ctypes
//! script, each built and run here against a real daemon with the mock provider.
//!
//! The test build does not produce `libprovd.so`/`libprovd.a` (cargo builds a cdylib or
//! staticlib only for `cargo build`), so the first test that needs them runs
//! `cargo build -p provd-ffi` into the same target directory and profile as this test
//! binary; cargo's lock makes concurrent tests wait for one build, and later runs are
//! no-ops. `PROVD_LIB_DIR` points the tests at prebuilt libraries instead.
//!
//! A missing tool (cc, c++, go, valgrind, python3, pkg-config) skips its test with a
//! `SKIPPED` line, except in CI (`CI` set), which installs them all: there it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provd_tests::{workspace, Daemon};

/// The workspace root (this crate is `tests/`).
/// Where the built libraries are: `target/<profile>` of this test binary.
struct Lib {
    dir: PathBuf,
    include: PathBuf,
}

impl Lib {
    fn so(&self) -> PathBuf {
        self.dir.join("libprovd.so")
    }

    fn a(&self) -> PathBuf {
        self.dir.join("libprovd.a")
    }
}

/// Builds libprovd (a no-op when it is up to date) and returns where it is.
fn lib() -> Lib {
    let include = workspace().join("include");
    if let Some(dir) = std::env::var_os("PROVD_LIB_DIR") {
        return Lib {
            dir: PathBuf::from(dir),
            include,
        };
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/ffi-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_owned();
    let target_dir = profile_dir.parent().expect("target dir").to_owned();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name");
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace())
        .args(["build", "--quiet", "-p", "provd-ffi"])
        .env("CARGO_TARGET_DIR", &target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("run cargo build -p provd-ffi");
    assert!(
        out.status.success(),
        "cargo build -p provd-ffi failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = Lib {
        dir: profile_dir,
        include,
    };
    assert!(
        lib.so().exists() && lib.a().exists(),
        "no libprovd in {}",
        lib.dir.display()
    );
    lib
}

/// Whether `tool` runs; prints SKIPPED and returns false when it does not, except in CI,
/// where every tool is installed and a missing one is a failure.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing, and CI installs it (.ci/run)"
        );
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// Runs a command, panicking with its output when it fails.
fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    println!("{what}:\n{stdout}{stderr}");
    out
}

/// A pkg-config file for the build tree, from the template the install script uses.
fn write_pc(lib: &Lib, dir: &Path) {
    let template =
        std::fs::read_to_string(workspace().join("ffi/provd.pc.in")).expect("ffi/provd.pc.in");
    let pc = template
        .replace("@PREFIX@", &workspace().display().to_string())
        .replace("@LIBDIR@", &lib.dir.display().to_string())
        .replace("@INCLUDEDIR@", &lib.include.display().to_string())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(dir.join("provd.pc"), pc).expect("write provd.pc");
}

/// Compiler flags for libprovd: from pkg-config and the template when pkg-config is
/// installed (which tests the .pc file too), else the same flags by hand.
struct Flags {
    cflags: Vec<String>,
    /// For linking libprovd.so.
    libs: Vec<String>,
    /// What libprovd.a needs besides itself.
    static_libs: Vec<String>,
}

fn flags(lib: &Lib, tmp: &Path) -> Flags {
    let has_pkg_config = Command::new("pkg-config")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pkg_config {
        return Flags {
            cflags: vec![format!("-I{}", lib.include.display())],
            libs: vec![format!("-L{}", lib.dir.display()), "-lprovd".into()],
            static_libs: "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
                .split(' ')
                .map(str::to_owned)
                .collect(),
        };
    }
    write_pc(lib, tmp);
    let query = |args: &[&str]| -> Vec<String> {
        let out = run(
            Command::new("pkg-config")
                .args(args)
                .arg("provd")
                .env("PKG_CONFIG_PATH", tmp),
            "pkg-config",
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let static_libs = query(&["--static", "--libs-only-l"])
        .into_iter()
        .filter(|f| f != "-lprovd")
        .collect();
    Flags {
        cflags: query(&["--cflags"]),
        libs: query(&["--libs"]),
        static_libs,
    }
}

/// Builds `tests/c/provd_test.c` into `tmp`, dynamically or statically linked.
fn build_c_test(lib: &Lib, tmp: &Path, linking: Linking) -> PathBuf {
    build_c(lib, tmp, "provd_test", linking)
}

/// Builds `tests/c/PROGRAM.c` into `tmp` against libprovd as its `provd.pc` says, with
/// every warning an error, dynamically or statically linked.
fn build_c(lib: &Lib, tmp: &Path, program: &str, linking: Linking) -> PathBuf {
    let flags = flags(lib, tmp);
    let src = workspace().join(format!("tests/c/{program}.c"));
    let exe = tmp.join(match linking {
        Linking::Dynamic => format!("{program}_dynamic"),
        Linking::Static => format!("{program}_static"),
    });
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .args(&flags.cflags)
        .arg(&src)
        .arg("-o")
        .arg(&exe);
    match linking {
        Linking::Dynamic => {
            cc.args(&flags.libs)
                .arg(format!("-Wl,-rpath,{}", lib.dir.display()));
        }
        Linking::Static => {
            cc.arg(lib.a()).args(&flags.static_libs);
        }
    }
    cc.arg("-pthread");
    run(&mut cc, &format!("cc {program}.c"));
    exe
}

/// `exe` under valgrind's memcheck with `options` too, where leaks of the kinds that mean
/// lost memory count as errors (exit 99); "still reachable" (the C runtime's and
/// thread-locals' own buffers) and "possibly lost" do not.
fn memcheck(exe: &Path, options: &[&str]) -> Command {
    let mut valgrind = Command::new("valgrind");
    valgrind
        .args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .args(options)
        .arg(exe);
    valgrind
}

#[derive(Clone, Copy)]
enum Linking {
    Dynamic,
    Static,
}

/// A socket path in `tmp` where no daemon listens.
fn missing_socket(tmp: &Path) -> PathBuf {
    tmp.join("no-daemon.sock")
}

fn assert_c_test_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.ends_with(" 0 failed"))
        .unwrap_or_else(|| panic!("no clean summary line in:\n{stdout}"));
    let passed: u32 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("N passed");
    assert!(passed > 150, "only {passed} checks ran: {summary}");
}

#[test]
fn c_caller_linked_dynamically_streams_cancels_and_walks_every_error_path() {
    if !have("cc", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c_test(&lib, tmp.path(), Linking::Dynamic);
    let daemon = Daemon::start();
    let out = run(
        Command::new(&exe)
            .arg(&daemon.socket)
            .arg(missing_socket(tmp.path())),
        "provd_test (dynamic)",
    );
    assert_c_test_passed(&out);
}

#[test]
fn c_caller_linked_statically_passes_the_same_checks() {
    if !have("cc", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c_test(&lib, tmp.path(), Linking::Static);
    let binary = std::fs::read(&exe).unwrap();
    assert!(
        !binary.windows(11).any(|w| w == b"libprovd.so"),
        "the static build still refers to libprovd.so"
    );
    let daemon = Daemon::start();
    let out = run(
        Command::new(&exe)
            .arg(&daemon.socket)
            .arg(missing_socket(tmp.path()))
            .env_remove("LD_LIBRARY_PATH"),
        "provd_test (static)",
    );
    assert_c_test_passed(&out);
}

#[test]
fn c_caller_runs_clean_under_valgrind_memcheck() {
    if !have("cc", &["--version"]) || !have("valgrind", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c_test(&lib, tmp.path(), Linking::Dynamic);
    let daemon = Daemon::start();
    let out = memcheck(
        &exe,
        &[
            "--track-origins=yes",
            // The fork test's child leaves the parent's client alone, as the header
            // says; its threads stay behind in the parent, so the child's copy of that
            // memory looks lost. The parent's accounting is the one that matters.
            "--child-silent-after-fork=yes",
        ],
    )
    .arg(&daemon.socket)
    .arg(missing_socket(tmp.path()))
    .output()
    .expect("run valgrind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "memcheck found errors or leaks ({}):\n{stderr}",
        out.status
    );
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    for kind in ["definitely lost", "indirectly lost"] {
        let lost = stderr
            .lines()
            .find(|l| l.contains(kind))
            .is_none_or(|l| l.contains(&format!("{kind}: 0 bytes")));
        assert!(lost, "{kind} memory:\n{stderr}");
    }
    assert_c_test_passed(&out);
}

#[test]
fn cpp_raii_wrapper_compiles_warning_free_and_streams() {
    if !have("c++", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    let flags = flags(&lib, tmp.path());
    let exe = tmp.path().join("provd_example");
    run(
        Command::new("c++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
            .args(&flags.cflags)
            .arg(workspace().join("tests/cpp/example.cpp"))
            .arg("-o")
            .arg(&exe)
            .args(&flags.libs)
            .arg(format!("-Wl,-rpath,{}", lib.dir.display()))
            .arg("-pthread"),
        "c++ example.cpp",
    );
    let daemon = Daemon::start();
    let out = run(Command::new(&exe).arg(&daemon.socket), "provd_example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("callback: 0 1 2 3 4 5 6 7 "), "{stdout}");
    assert!(stdout.contains("stream: 0 1 2 3 4 "), "{stdout}");
    assert!(
        stdout.contains("tool call: get_weather mock_call_0 {\"city\":\"mock\"}"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tool answer: The tool get_weather returned: 18 degrees and sunny"),
        "{stdout}"
    );
    assert!(stdout.contains("json: {\"name\":\"mock\"}"), "{stdout}");
    assert!(stdout.contains("caught not_found"), "{stdout}");
}

#[test]
fn go_cgo_caller_streams_a_generation() {
    if !have("go", &["version"]) || !have("cc", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    // Caches under target/ keep reruns fast; nothing is fetched (no network, no modules).
    let go_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let exe = tmp.path().join("provd-go");
    let go = |cmd: &mut Command| {
        cmd.current_dir(workspace().join("tests/go"))
            .env("GOCACHE", go_home.join("cache"))
            .env("GOPATH", go_home.join("path"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOTELEMETRY", "off")
            .env("GO111MODULE", "on")
            .env("CGO_ENABLED", "1")
            .env(
                "CGO_LDFLAGS",
                format!("-L{0} -Wl,-rpath,{0}", lib.dir.display()),
            );
    };
    let mut build = Command::new("go");
    build.args(["build", "-o"]).arg(&exe).arg(".");
    go(&mut build);
    run(&mut build, "go build");
    let daemon = Daemon::start();
    let out = run(Command::new(&exe).arg(&daemon.socket), "provd-go");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("go tool answer: The tool get_weather returned: 18 degrees and sunny"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "go: 0 failed"), "{stdout}");
}

#[test]
fn python_ctypes_caller_streams_a_generation() {
    let python = provd_tests::python();
    if !have(&python.to_string_lossy(), &["--version"]) {
        return;
    }
    let lib = lib();
    let daemon = Daemon::start();
    let out = run(
        Command::new(&python)
            .arg(workspace().join("tests/python/ffi_stream.py"))
            .arg("--lib")
            .arg(lib.so())
            .arg("--socket")
            .arg(&daemon.socket),
        "ffi_stream.py",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l == "python: 0 failed"), "{stdout}");
}

#[test]
fn pkg_config_file_describes_the_built_library() {
    if !have("pkg-config", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    write_pc(&lib, tmp.path());
    let query = |args: &[&str]| {
        let out = run(
            Command::new("pkg-config")
                .args(args)
                .arg("provd")
                .env("PKG_CONFIG_PATH", tmp.path()),
            "pkg-config",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(query(&["--modversion"]), env!("CARGO_PKG_VERSION"));
    assert_eq!(query(&["--cflags"]), format!("-I{}", lib.include.display()));
    // The rpath lets a program linked this way find libprovd.so with no
    // LD_LIBRARY_PATH and no ldconfig.
    assert_eq!(
        query(&["--libs"]),
        format!("-L{0} -Wl,-rpath,{0} -lprovd", lib.dir.display())
    );
    let static_libs = query(&["--static", "--libs"]);
    assert!(static_libs.contains("-lpthread -lm -ldl"), "{static_libs}");
}

/// The first C program of `ffi/README.md`, as printed there.
fn readme_c_example() -> String {
    let readme = std::fs::read_to_string(workspace().join("ffi/README.md")).expect("ffi/README.md");
    let start = readme
        .find("```c\n")
        .expect("a ```c block in ffi/README.md")
        + 5;
    let len = readme[start..].find("```").expect("the block ends");
    readme[start..start + len].to_owned()
}

/// `ffi/README.md` followed literally: `ffi/install.sh PREFIX`, then its example compiled
/// with `cc app.c $(pkg-config --cflags --libs provd)`, runs with no LD_LIBRARY_PATH
/// (the installed provd.pc carries an rpath), and the installed provd.pc is the filled-in
/// template without its comments.
#[test]
fn installed_library_runs_a_pkg_config_linked_program_without_ld_library_path() {
    if !have("cc", &["--version"]) || !have("pkg-config", &["--version"]) {
        return;
    }
    let lib = lib();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    run(
        Command::new("sh")
            .arg(workspace().join("ffi/install.sh"))
            .arg(&prefix)
            .env("PROVD_LIB_DIR", &lib.dir),
        "ffi/install.sh",
    );
    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/provd.pc")).unwrap();
    assert!(
        !pc.lines().any(|l| l.starts_with('#')) && !pc.contains('@'),
        "the installed provd.pc keeps the template's comments or placeholders:\n{pc}"
    );

    let app = tmp.path().join("app.c");
    std::fs::write(&app, readme_c_example()).unwrap();
    let flags = run(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "provd"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        "pkg-config --cflags --libs provd",
    );
    let exe = tmp.path().join("app");
    run(
        Command::new("cc")
            .arg(&app)
            .args(String::from_utf8_lossy(&flags.stdout).split_whitespace())
            .arg("-o")
            .arg(&exe),
        "cc app.c $(pkg-config --cflags --libs provd)",
    );
    let daemon = Daemon::start();
    let out = run(
        Command::new(&exe)
            .env_remove("LD_LIBRARY_PATH")
            .env("PROVD_SOCKET", &daemon.socket),
        "the README's example program",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" tokens"), "{stderr}");
    assert!(!out.stdout.is_empty(), "no text streamed");
}

/// `tests/c/tool_loop.c` against a daemon whose provider is an OpenAI-type provider on
/// the faithful OpenAI mock: the C ABI's tool loop and JSON answer reach a real
/// provider type's API, not only the built-in mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_caller_runs_a_tool_loop_and_a_json_answer_against_an_openai_model() {
    if !have("cc", &["--version"]) {
        return;
    }
    let upstream = provd_tests::apis::openai::tool_model("gpt-test").await;
    let daemon = Daemon::builder()
        .config(&provd_tests::apis::provider_config(
            "openai",
            &format!("{}/v1", upstream.base_url),
            0,
            "",
        ))
        .env("PROVD_TEST_KEY", provd_tests::apis::TEST_KEY)
        .start();
    let out = tokio::task::block_in_place(|| {
        let lib = lib();
        let tmp = tempfile::tempdir().unwrap();
        let exe = build_c(&lib, tmp.path(), "tool_loop", Linking::Dynamic);
        run(
            Command::new(&exe).arg(&daemon.socket).arg("p/gpt-test"),
            "tool_loop",
        )
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            r#"call call_gpt_1 get_weather {"city":"Paris"}"#,
            "answer GPT says: 18 degrees and sunny",
            r#"json {"city":"Paris","country":"France"}"#,
        ],
        "{stdout}"
    );
    // The model got OpenAI's shapes: the call sent back with its id, then its result.
    let bodies: Vec<serde_json::Value> =
        upstream.requests().into_iter().map(|r| r.json()).collect();
    let second = &bodies[1]["messages"];
    assert_eq!(second[1]["tool_calls"][0]["id"], "call_gpt_1");
    assert_eq!(second[2]["role"], "tool");
    assert_eq!(second[2]["tool_call_id"], "call_gpt_1");
    assert_eq!(bodies[2]["response_format"]["type"], "json_schema");
}

/// `tests/c/usage_report.c` against a daemon where two generations ran, one of a priced
/// model: the report reaches C through `provd_client_usage` with the figures the Rust
/// client sees, and its refusals are typed. Under valgrind memcheck when it is installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_caller_reads_a_usage_report_and_its_refusals() {
    if !have("cc", &["--version"]) {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::builder()
        .config(
            "[providers.mock]\ntype = \"mock\"\n\
             [prices.\"mock/mock-1\"]\ninput_per_mtok = 2.0\noutput_per_mtok = 4.0\n",
        )
        .env("STATE_DIRECTORY", &state.path().display().to_string())
        .start();
    let client = daemon.client().await;
    for model in ["mock-1", "mock-2"] {
        let request = provd_client::GenerateRequest {
            provider: Some("mock".into()),
            model: Some(model.into()),
            ..provd_client::GenerateRequest::prompt("one two three")
        };
        client
            .generate(request)
            .await
            .unwrap()
            .collect_text()
            .await
            .unwrap();
    }
    let by_model = provd_client::message::UsageParams {
        by: Some(provd_client::message::UsageBy::Model),
        ..Default::default()
    };
    let expected = client.usage(&by_model).await.unwrap();
    let out = tokio::task::block_in_place(|| {
        let lib = lib();
        let tmp = tempfile::tempdir().unwrap();
        let exe = build_c(&lib, tmp.path(), "usage_report", Linking::Dynamic);
        if have("valgrind", &["--version"]) {
            run(
                memcheck(&exe, &[]).arg(&daemon.socket),
                "usage_report under valgrind",
            )
        } else {
            run(Command::new(&exe).arg(&daemon.socket), "usage_report")
        }
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |row: &provd_client::message::UsageRow, label: &str| {
        format!(
            "{label} {} requests={} completed={} prompt={} completion={} cost={}",
            row.key.as_deref().unwrap_or("-"),
            row.requests,
            row.completed,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost.map_or("-".to_owned(), |c| format!("{c:.6}"))
        )
    };
    let mut lines = vec![format!(
        "info by=2 rows={} priced=1 unpriced=1 has_uid=0 window_ms=604800000",
        expected.rows.len()
    )];
    lines.extend(expected.rows.iter().map(|r| line(r, "row")));
    lines.push(line(&expected.total, "total"));
    lines.push("unpriced mock/mock-2".to_owned());
    lines.push("refusals ok".to_owned());
    assert_eq!(stdout.lines().collect::<Vec<_>>(), lines, "{stdout}");
    assert!(
        expected.rows.iter().any(|r| r.cost.is_some()),
        "mock-1 is priced"
    );
}
