"""A job sent to a provider, client side: its bytes up, its run, its outputs down (compute/sent_jobs.py).

    POST   /v1/peer/compute/jobs              {"spec", "price", "memory_price", "authorization", "deal",
                                               "data": [{"path", "size", "sha256", "verify_hash"}]}
                                              -> 201 {"job": ID, "chunk": N}   (404 module-not-found: push it)
    PUT    /v1/peer/compute/jobs/ID/data/OFF  the next bytes of the data, in order (stdin, then each input),
                                              at most `chunk` a request -> {"received": N}
    POST   /v1/peer/compute/jobs/ID/run       -> {"run", "provenance", "outputs": [{"name", "size", "sha256"}],
                                                  "stdout", "stderr", "tab", ["refusal"], ["trap"]}
    GET    /v1/peer/compute/jobs/ID/outputs/N?offset=OFF   at most `chunk` bytes of output N from OFF
    DELETE /v1/peer/compute/jobs/ID           the provider forgets the job and its files

Only the node that sent a job may touch it.  Every answer is checked by the caller against what the
provider signed in its provenance record.
"""

from __future__ import annotations

from typing import Any

from ..errors import PeerMisbehaved, PeerRefused, PeerUnreachable
from .peer_client import PeerClient

JOBS_PATH = "/v1/peer/compute/jobs"
DATA_PATH = JOBS_PATH + "/{job}/data/{offset}"
RUN_PATH = JOBS_PATH + "/{job}/run"
OUTPUT_PATH = JOBS_PATH + "/{job}/outputs/{output}"
JOB_PATH = JOBS_PATH + "/{job}"
CANCEL_PATH = JOBS_PATH + "/{job}/cancel"
CHUNK = 1024 * 1024  # bytes of data or output in one request (a peer body is at most 1 MiB: the app's client_max_size)
JOB_ANSWER = 4 * 1024  # a job's begin, data and delete answers: its id (at most 64 characters) and a count
# A run's record and its provenance, but for its stdout and stderr: what the job's body named (at most 1 MiB, the peer
# API's), twice, and its outputs' names and hashes.
RUN_RECORD = 4 * 1024 * 1024


def run_answer_bound(stdout_cap: int, stderr_cap: int) -> int:
    """The most bytes an honest answer to the run of a job whose spec keeps `stdout_cap` and `stderr_cap` bytes
    takes: each stream twice (at the top and in its run's record) as JSON text, up to 6 bytes a byte (a control
    character is \\u00XX), and its record."""
    return 2 * 6 * (stdout_cap + stderr_cap) + RUN_RECORD


async def begin(client: PeerClient, url: str, provider: str, body: dict[str, Any]) -> str:
    response = await client.request(url, "POST", JOBS_PATH, json=body, to=provider, max_size=JOB_ANSWER)
    answer = response.json()
    job = answer.get("job") if isinstance(answer, dict) else None
    if not isinstance(job, str) or not job.isalnum() or len(job) > 64:
        raise response.shapeless(f"provider {url} answered a job without its id", url=url)
    return job


async def send(client: PeerClient, url: str, provider: str, job: str, offset: int, data: bytes) -> None:
    await client.request(url, "PUT", DATA_PATH.format(job=job, offset=offset), data=data, to=provider,
                         max_size=JOB_ANSWER)


async def run(client: PeerClient, url: str, provider: str, job: str, timeout: float, most: int) -> dict[str, Any]:
    """The job's run; `most`: the bytes of an honest answer to it at most (run_answer_bound of its spec)."""
    try:
        response = await client.request(url, "POST", RUN_PATH.format(job=job), json={}, to=provider, timeout=timeout,
                                        max_size=most)
    except PeerRefused as err:
        # Not refused: past an honest answer's bound, or a fault of the provider's (500), it may have run, and its
        # answer is not one to believe
        if "answer_limit" in err.details or err.details.get("peer_status") == 500:
            raise PeerUnreachable(f"provider {url}: {err.message}", url=url, reason=err.message, sent=True) from None
        raise
    try:
        answer = response.json()
        if not isinstance(answer, dict) or not isinstance(answer.get("run"), dict) \
                or not isinstance(answer.get("provenance"), dict) or not isinstance(answer.get("outputs"), list):
            raise response.shapeless(f"provider {url} answered a job's run without its run, record and outputs")
    except PeerMisbehaved as err:
        # Struck, and not a refusal either: it may have run, and nothing of it can be believed (its job goes
        # elsewhere, unpaid)
        raise PeerUnreachable(f"provider {url}: {err.message}", url=url, reason="an answer that is not a run",
                              sent=True) from None
    return answer


async def fetch(client: PeerClient, url: str, provider: str, job: str, output: int, offset: int) -> bytes:
    path = OUTPUT_PATH.format(job=job, output=output) + f"?offset={offset}"
    return (await client.request(url, "GET", path, to=provider, max_size=CHUNK)).body


async def cancel(client: PeerClient, url: str, provider: str, job: str, timeout: float) -> bool:
    """Ask the provider to stop the job it runs for this node (answered once the run has ended): whether its run had
    begun (`ran`; False: it dropped the job unrun, nothing of it to pay)."""
    response = await client.request(url, "POST", CANCEL_PATH.format(job=job), json={}, to=provider, timeout=timeout,
                                    max_size=JOB_ANSWER)
    answer = response.json()
    ran = answer.get("ran") if isinstance(answer, dict) else None
    if type(ran) is not bool:
        raise response.shapeless(f"provider {url} answered a cancel without saying whether the job ran", url=url)
    return ran


async def forget(client: PeerClient, url: str, provider: str, job: str) -> None:
    await client.request(url, "DELETE", JOB_PATH.format(job=job), to=provider, max_size=JOB_ANSWER)
