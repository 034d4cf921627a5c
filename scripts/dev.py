"""Run a complete Netsody control plane on this machine for development: `hatch run dev`.

Starts `netsody-controller dev` (the controller with SQLite and its development OpenID provider)
and `netsody-sp` (a super peer with a self-signed certificate made for the bind address), all
state in `.netsody-dev/`. Both outputs are shown with a prefix. Ctrl-C or SIGTERM stops both by
PID, and the launcher exits non-zero when one of them dies on its own. Once both are up it prints
the `netsody login` and `netsody join` commands for devices that reach the bind address.

A component whose command is still a placeholder (it prints "not implemented yet") is reported
as not built, and the launcher runs the others.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER_MARK = "not implemented yet"
AGENT_CLIENT_ID = "netsody-agent"
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 120.0
PROBE_TIMEOUT = 60.0
CERT_DAYS = 365


@dataclass
class Component:
    """One supervised child process and how to tell that it is ready."""

    name: str
    argv: list[str]
    ready: str
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = field(default=None, repr=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hatch run dev",
        description="Run the controller, its development OpenID provider and a super peer on "
        "this machine, with no Docker and no configuration. For development only: the OpenID "
        "provider signs in anyone as any email address.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="bind address of every service (default 127.0.0.1); to serve devices in network "
        "namespaces, give an address they reach",
    )
    parser.add_argument(
        "--controller-port", type=int, default=8080, help="controller TCP port (default 8080)"
    )
    parser.add_argument(
        "--idp-port", type=int, default=9001, help="OpenID provider TCP port (default 9001)"
    )
    parser.add_argument(
        "--sp-port",
        type=int,
        default=8443,
        help="super peer port, UDP for HTTP/3 and TCP for HTTP/2 (default 8443)",
    )
    parser.add_argument(
        "--proxy-ports",
        default="49152-49407",
        help="UDP port range of the super peer's relay (default 49152-49407)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".netsody-dev"),
        help="directory for the database, keys and certificate (default .netsody-dev)",
    )
    return parser


def url_host(host: str) -> str:
    """Return the host to write in URLs for a bind address (a wildcard becomes loopback)."""
    if host in ("0.0.0.0", "", "::"):  # noqa: S104 - compares, does not bind
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def public_address(host: str) -> str:
    """Return the address the super peer advertises for relay ports."""
    return url_host(host).strip("[]")


# Certificate


def ensure_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """Return the super peer's certificate and key, made self-signed for `address` if needed.

    The certificate names localhost, 127.0.0.1 and `address`. An existing pair is kept while it
    still names `address` and has not expired.
    """
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if _certificate_usable(cert_path, key_path, address):
        return cert_path, key_path

    from netsody_common.selfsigned import self_signed_certificate, write_pem

    directory.mkdir(parents=True, exist_ok=True)
    addresses = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address(address)}
    cert, key = self_signed_certificate(
        "Netsody development super peer",
        dns_names=["localhost"],
        ip_addresses=sorted(addresses, key=str),
        days=CERT_DAYS,
        ca=True,
    )
    write_pem(cert, key, cert_path=cert_path, key_path=key_path)
    names = ", ".join(["localhost", *sorted({str(item) for item in addresses})])
    print(f"[dev] made a self-signed super peer certificate for {names}")
    return cert_path, key_path


def _certificate_usable(cert_path: Path, key_path: Path, address: str) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
        return False
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ipaddress.ip_address(address) in names.get_values_for_type(x509.IPAddress)


# Components


def command_path(name: str) -> str:
    """Return the console script `name` of this environment, else the one on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"[dev] {name} is not installed; run this through `hatch run dev`")
    return found


def probe(argv: list[str]) -> tuple[bool, str]:
    """Run `argv --help` and return whether the command is built, and its help text."""
    try:
        result = subprocess.run(
            [*argv, "--help"], capture_output=True, text=True, timeout=PROBE_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return True, ""
    output = result.stdout + result.stderr
    return PLACEHOLDER_MARK not in output, output


def plan_components(args: argparse.Namespace, state_dir: Path) -> list[Component]:
    """Return the components to start; report and leave out those not built yet."""
    host, urlhost = args.host, url_host(args.host)
    sp_url = f"https://{urlhost}:{args.sp_port}/"
    controller = [command_path("netsody-controller"), "dev"]
    superpeer = [command_path("netsody-sp")]
    components: list[Component] = []

    built, help_text = probe(controller)
    if built:
        argv = [*controller, "--host", host, "--port", str(args.controller_port)]
        argv += ["--idp-port", str(args.idp_port), "--state-dir", str(state_dir / "controller")]
        argv += ["--super-peer", sp_url]
        if "--idp-host" in help_text:
            argv += ["--idp-host", host]
        elif public_address(host) != "127.0.0.1":
            print(
                "[dev] note: this netsody-controller binds its OpenID provider to 127.0.0.1 "
                "only, so devices that do not share this machine's loopback cannot sign in"
            )
        components.append(
            Component("controller", argv, f"http://{urlhost}:{args.controller_port}/healthz")
        )
    else:
        print(
            "[dev] the controller is not built yet: `netsody-controller dev` prints "
            f"'{PLACEHOLDER_MARK}'; starting the rest without it"
        )

    built, _ = probe(superpeer)
    if built:
        cert, key = ensure_certificate(state_dir / "superpeer", public_address(host))
        listen = f"[{host}]:{args.sp_port}" if ":" in host else f"{host}:{args.sp_port}"
        argv = [*superpeer, "--listen", listen, "--cert", str(cert), "--key", str(key)]
        argv += [
            "--proxy-public-addresses",
            public_address(host),
            "--proxy-ports",
            args.proxy_ports,
        ]
        components.append(
            Component("super-peer", argv, f"tcp://{urlhost.strip('[]')}:{args.sp_port}")
        )
    else:
        print(
            "[dev] the super peer is not built yet: `netsody-sp` prints "
            f"'{PLACEHOLDER_MARK}'; starting the rest without it"
        )
    return components


def start(component: Component) -> None:
    component.process = subprocess.Popen(
        component.argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        # Own session: Ctrl-C reaches only this launcher, which then stops children in order.
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    component.reader = threading.Thread(target=_relay_output, args=(component,), daemon=True)
    component.reader.start()
    print(
        f"[dev] started {component.name} (pid {component.process.pid}): {' '.join(component.argv)}"
    )


def _relay_output(component: Component) -> None:
    assert component.process is not None
    assert component.process.stdout is not None
    prefix = f"[{component.name}] "
    for line in component.process.stdout:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()


def stop(component: Component) -> None:
    """Stop one component by its PID: SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""
    process = component.process
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(
            f"[dev] {component.name} (pid {process.pid}) ignored SIGTERM for "
            f"{STOP_TIMEOUT:.0f} s; killing it"
        )
        process.kill()
        process.wait(STOP_TIMEOUT)
    if component.reader is not None:
        component.reader.join(2)
    print(f"[dev] stopped {component.name} (pid {process.pid}, exit code {process.returncode})")


# Readiness


def is_ready(target: str) -> bool:
    """Return whether an http:// URL returns 200 or a tcp://HOST:PORT accepts connections."""
    if target.startswith("tcp://"):
        host, _, port = target.removeprefix("tcp://").rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            return False
        return True
    try:
        with urllib.request.urlopen(target, timeout=2) as response:  # noqa: S310 - our own URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(
    components: list[Component], stop_event: threading.Event, args: argparse.Namespace
) -> None:
    """Print where each component is reachable once ready, then the device commands."""
    pending = list(components)
    deadline = time.monotonic() + READY_TIMEOUT
    while pending and not stop_event.is_set() and time.monotonic() < deadline:
        for component in list(pending):
            if is_ready(component.ready):
                print(f"[dev] {component.name} is ready ({component.ready})")
                pending.remove(component)
        stop_event.wait(0.5)
    if stop_event.is_set():
        return
    for component in pending:
        print(
            f"[dev] {component.name} is not ready after {READY_TIMEOUT:.0f} s "
            f"({component.ready}); see its output above"
        )
    print(device_instructions(args, {component.name for component in components}))


def device_instructions(args: argparse.Namespace, running: set[str]) -> str:
    """Return the commands devices run against this development setup."""
    host = url_host(args.host)
    controller = f"http://{host}:{args.controller_port}/api"
    idp = f"http://{host}:{args.idp_port}"
    sp_url = f"https://{host}:{args.sp_port}/"
    lines = [
        "",
        "Netsody development services",
        f"  dashboard:        http://{host}:{args.controller_port}/",
        f"  controller API:   {controller}",
        f"  Swagger UI:       http://{host}:{args.controller_port}/swagger-ui/",
        f"  OpenID provider:  {idp}   (development only: any email address signs in)",
        f"  super peer:       {sp_url}",
        f"  its certificate:  {args.state_dir / 'superpeer' / 'cert.pem'} (self-signed)",
        "",
        *_device_heading(args.host),
        f"  {agent_run_command(args.state_dir.resolve() / 'superpeer' / 'cert.pem')}",
        f"  netsody login --controller {controller} --auth-url {idp} \\",
        f"      --auth-client-id {AGENT_CLIENT_ID} --super-peer {sp_url}",
        f"  (open the printed address, {idp}/device, enter the code and any email address)",
        "Then add the device to a network on the dashboard's Nodes tab, or in the Swagger UI:",
        "  Authorize, then POST /api/networks and POST /api/networks/{id}/nodes with its device id",
        "Or without a browser, with a join key created through the API or dashboard:",
        f"  netsody join --controller {controller} --join-key <KEY> --super-peer {sp_url}",
        "",
    ]
    for name in ("controller", "super-peer"):
        if name not in running:
            lines.append(
                f"Not running: {name} (not built yet), so the commands above that use it will fail."
            )
    return "\n".join(lines)


def _device_heading(host: str) -> list[str]:
    """Return where devices run the commands below, and where `netsody` is installed."""
    address = public_address(host)
    wildcard = host in ("0.0.0.0", "", "::")  # noqa: S104 - compares, does not bind
    loopback_only = ipaddress.ip_address(address).is_loopback and not wildcard
    where = (
        "On this machine, as root (network namespaces cannot reach 127.0.0.1: restart with "
        "--host and an address they reach):"
        if loopback_only
        else f"On each device (this machine or a network namespace that reaches {address}), "
        "as root:"
    )
    netsody = Path(sys.executable).parent / "netsody"
    return [where, f"  (`netsody` is {netsody}, on PATH after `hatch shell`)"]


def agent_run_command(cert: Path) -> str:
    """Return the `netsody run` line that makes the agent trust the self-signed super peer."""
    try:
        _, help_text = probe([command_path("netsody"), "run"])
    except SystemExit:
        help_text = ""
    if "--super-peer-ca" in help_text:
        return f"netsody run --super-peer-ca {cert} &"
    return f"SSL_CERT_FILE={cert} netsody run &"


# Supervision


def supervise(components: list[Component], args: argparse.Namespace) -> int:
    """Run until a signal arrives (exit 0) or a component dies (exit 1); stop all on the way out."""
    stop_event = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"[dev] received {signal.Signals(signum).name}; stopping")
        stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        for component in components:
            start(component)
        threading.Thread(
            target=wait_ready, args=(components, stop_event, args), daemon=True
        ).start()
        while not stop_event.wait(0.5):
            died = [c for c in components if c.process is not None and c.process.poll() is not None]
            if died:
                for component in died:
                    assert component.process is not None
                    print(
                        f"[dev] {component.name} (pid {component.process.pid}) exited with "
                        f"code {component.process.returncode}; stopping the others"
                    )
                status = 1
                break
    finally:
        for component in reversed(components):
            stop(component)
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    components = plan_components(args, state_dir)
    if not components:
        print("[dev] nothing to run: neither the controller nor the super peer is built yet")
        return 1
    return supervise(components, args)


if __name__ == "__main__":
    sys.exit(main())
