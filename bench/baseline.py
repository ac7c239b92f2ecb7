"""Load a CSV file into an HTTP API the way a user might without sluice.

Reads the file with the csv module and sends each row as a JSON object in
a PUT to a path filled from the row's columns. httpx's async client keeps
a fixed number of requests in flight, and tenacity retries 5xx responses
and connection errors with randomized exponential backoff. Prints one
JSON line: rows, delivered, failed, retries and elapsed seconds. sluice's
benchmark harness runs it as its baseline.
"""

import argparse
import asyncio
import csv
import json
import sys
import time
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)


class ServerError(Exception):
    """A 5xx response, which is worth retrying."""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument(
        "--path",
        required=True,
        help="path template with {column} placeholders, such as /flights/{year}",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument(
        "--initial-backoff", type=float, default=0.1, help="seconds"
    )
    parser.add_argument("--max-backoff", type=float, default=10.0, help="seconds")
    return parser.parse_args()


async def load(args):
    retries = 0

    def count_retry(_state):
        nonlocal retries
        retries += 1

    def retrying():
        return AsyncRetrying(
            retry=retry_if_exception_type((ServerError, httpx.TransportError)),
            wait=wait_random_exponential(
                multiplier=args.initial_backoff, max=args.max_backoff
            ),
            stop=stop_after_attempt(args.max_retries + 1),
            before_sleep=count_retry,
            reraise=True,
        )

    limits = httpx.Limits(
        max_connections=args.concurrency,
        max_keepalive_connections=args.concurrency,
    )
    headers = {"content-type": "application/json"}
    delivered = 0
    failed = 0

    async with httpx.AsyncClient(
        base_url=args.endpoint, limits=limits, timeout=30.0
    ) as client:

        async def put(path, body):
            async for attempt in retrying():
                with attempt:
                    response = await client.put(path, content=body, headers=headers)
                    if response.status_code >= 500:
                        raise ServerError(response.status_code)
                    response.raise_for_status()

        with open(args.file, newline="", encoding="utf-8") as file:
            rows = csv.DictReader(file)

            async def worker():
                nonlocal delivered, failed
                # All workers share one reader; asyncio runs one at a time,
                # so each row goes to exactly one worker.
                for row in rows:
                    values = {name: quote(value, safe="") for name, value in row.items()}
                    path = args.path.format_map(values)
                    body = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
                    try:
                        await put(path, body.encode())
                        delivered += 1
                    except (ServerError, httpx.HTTPError) as err:
                        failed += 1
                        print(f"{path}: {err!r}", file=sys.stderr)

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            elapsed = time.perf_counter() - started

    return {
        "rows": delivered + failed,
        "delivered": delivered,
        "failed": failed,
        "retries": retries,
        "elapsed": elapsed,
    }


def main():
    args = parse_args()
    result = asyncio.run(load(args))
    print(json.dumps(result))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
