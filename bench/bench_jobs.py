"""A job over a stored file against its raw steps, measured in the same run.

    python -m bench.bench_jobs [--size MIB]      (default 32; the issue's figure is at 256)

Stores a random file, then times, each once:
  get      `xsc store get CAP -o FILE`
  wasm     fixtures/wasm/sha256.wasm over FILE in this process (wasmtime, the node's engine settings)
  job      `xsc compute run sha256.wasm /in/data --input CAP:/in/data` (the file staged to disk, hashed in the
           sandbox, the run paid and recorded)
and prints the job's time as a ratio to get + wasm, the digest checked against hashlib's, and the node's
anonymous memory during the job against its idle figure.  One run of each: the machine is shared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import wasmtime

from xsc.compute import engine as eng
from xsc.devnet import xsc_command

from .common import UNLIMITED_USER, AnonSampler, start_node
from .report import Report

MiB = 1024 * 1024
SHA256 = Path(__file__).resolve().parent.parent / "fixtures" / "wasm" / "sha256.wasm"


def anon_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wasm_over(path: Path) -> tuple[float, str]:
    """The SHA-256 fixture over `path` with wasmtime directly: seconds, and what it printed."""
    engine = eng.make_engine()
    module = wasmtime.Module(engine, SHA256.read_bytes())
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_fuel(2**62)
    store.set_epoch_deadline(2**62)
    config = wasmtime.WasiConfig()
    config.stdin_file = str(path)
    printed: list[bytes] = []
    config.stdout_custom = lambda chunk: printed.append(bytes(chunk)) or len(chunk)
    store.set_wasi(config)
    started = time.perf_counter()
    linker.instantiate(store, module).exports(store)["_start"](store)
    return time.perf_counter() - started, b"".join(printed).decode().strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=32, help="MiB of the stored file")
    size = parser.parse_args().size * MiB
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp_dir:
        tmp = Path(tmp_dir)
        # A job over 256 MiB needs more fuel and time than a call's defaults (about 15 G fuel, 10 s here).
        env = {**UNLIMITED_USER, "XSC_COMPUTE_FUEL": str(200 * 10**9), "XSC_COMPUTE_TIMEOUT": "600"}
        node = start_node(tmp / "node", "--log-level", "WARNING", env=env)
        try:
            source = tmp / "data"
            with open(source, "wb") as out:
                for _ in range(size // MiB):
                    out.write(os.urandom(MiB))
            want = hashlib.sha256(source.read_bytes()).hexdigest()
            xsc = [*xsc_command(), "--data-dir", str(node.data_dir)]
            cap = subprocess.run([*xsc, "store", "put", str(source)], check=True, capture_output=True,
                                 text=True).stdout.split()[0]
            started = time.perf_counter()
            subprocess.run([*xsc, "store", "get", cap, "-o", str(tmp / "copy")], check=True, capture_output=True)
            get_s = time.perf_counter() - started
            wasm_s, wasm_digest = wasm_over(tmp / "copy")
            subprocess.run([*xsc, "compute", "deploy", str(SHA256), "--wasi"], check=True, capture_output=True)
            idle = anon_mib(node.pid)
            with AnonSampler(node.pid) as anon:
                started = time.perf_counter()
                job = subprocess.run([*xsc, "compute", "run", str(SHA256), "/in/data", "--input", f"{cap}:/in/data",
                                      "--no-stdin", "--fuel", str(200 * 10**9), "--timeout", "600"],
                                     capture_output=True, text=True, stdin=subprocess.DEVNULL)
                job_s = time.perf_counter() - started
            if job.returncode != 0:
                raise SystemExit(f"the job failed: {job.stderr.strip()}")
            job_digest = job.stdout.strip()
        finally:
            node.stop()
    print(f"file: {size // MiB} MiB; sha256: hashlib {want[:16]}…, wasm {wasm_digest[:16]}…, job {job_digest[:16]}… "
          f"({'same' if want == wasm_digest == job_digest else 'DIFFERENT'})")
    print(f"store get: {get_s:.2f} s   wasm over the file: {wasm_s:.2f} s   job: {job_s:.2f} s")
    print(f"job / (get + wasm): {job_s / (get_s + wasm_s):.2f} (target at most 1.4)")
    print(f"node anonymous memory: idle {idle:.0f} MiB, during the job at most {anon.peak_mib:.0f} MiB "
          f"(+{anon.peak_mib - idle:.0f} MiB; target at most +64)")
    report = Report("jobs")
    report.add(f"SHA-256 job over {size // MiB} MiB / (store get + wasm)", job_s / (get_s + wasm_s), "x",
               target=1.4, op="<=")
    report.add("node anonymous memory over idle during the job", anon.peak_mib - idle, "MiB", target=64, op="<=")
    report.add("job digest is sha256sum's", float(want == job_digest), "", target=1, op=">=")
    report.write()


if __name__ == "__main__":
    main()
