# p2pchat's tasks. `just --list` shows them.

# Run the whole test suite: unit tests and the black-box grading scenarios against the real binaries.
test:
    @bash ci/test.sh

# Formatting check and clippy with warnings as errors.
lint:
    @bash ci/lint.sh

# Run the networking lab (as root, with tcpdump): a server and three clients in network namespaces, written to target/lab/.
lab:
    @bash ci/lab.sh

# After `just lab`: p2pchat-trace's answers against tshark's, on the lab's and the committed captures.
lab-check:
    @bash ci/lab-check.sh
    @bash ci/lab-check.sh --files fixtures/captures/*

# WeasyPrint renders it from the run's own numbers, with the merged diagram as its picture.
# After `just lab`: the course's PDF report (at most two A4 pages) in target/lab/report.pdf, then checked.
report:
    bash ci/report.sh

# Read a capture: handshakes, udp or diagram FILE... (see p2pchat-trace --help).
trace *ARGS:
    @cargo run --quiet --bin p2pchat-trace -- {{ARGS}}

# Cargo shows its progress on a first build; Ctrl-C (the usual way to stop it) ends it quietly.
# Start a server on the defaults (0.0.0.0:12000, ./users.json); extra flags are passed on.
[no-exit-message]
server *FLAGS:
    @cargo run --release --bin p2pchat-server -- {{FLAGS}}

# Start a client (default server 127.0.0.1:12000); extra flags are passed on.
[no-exit-message]
client *FLAGS:
    @cargo run --release --bin p2pchat-client -- {{FLAGS}}

# Format the code in place.
fmt:
    @cargo fmt --all

# Benchmarks (release): login flood and timing at the default scrypt cost, direct messages, file transfer (1 GiB on loopback, 20 MiB over a lossy link), then every load workload in plaintext and over TLS, beside ngircd when installed (docs/performance.md).
bench:
    @cargo test --release --locked --test bench -- --ignored --nocapture --test-threads 1
    @cargo test --release --locked --test transfer_bench -- --ignored --nocapture --test-threads 1
    @cargo build --release --locked --bin p2pchat-server
    @ngircd --version 2>/dev/null | grep -q '+SSL' || echo "bench: no ngircd with TLS (+SSL) on PATH: p2pchat alone; for the comparison run: just bench-deps"
    @cargo bench --locked --bench load -- --both

# What `just bench` compares against: Debian's ngircd (built with TLS: `ngircd --version` lists +SSL), from apt. CI does not need it.
bench-deps:
    @if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y ngircd; else sudo DEBIAN_FRONTEND=noninteractive apt-get install -y ngircd; fi
    @ngircd --version | head -n 1

# Load workloads (burst paced idle registrations default-burst handshakes quiet-room; all if none), plaintext unless --tls or --both; flags: `just load --help`.
load *ARGS:
    @cargo build --release --locked --bin p2pchat-server
    @cargo bench --locked --bench load -- {{ARGS}}

# Run the property tests (tests/fuzz.rs) long: CASES cases per property (default 250000), optimised.
fuzz CASES="250000":
    @PROPTEST_CASES={{CASES}} cargo test --locked --release --test fuzz -- --nocapture
