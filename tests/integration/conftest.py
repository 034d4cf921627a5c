"""Shared fixtures and marker handling for the integration tests.

`postgres_url`, `redis_url` and `s3_settings` are session-scoped services. Each one comes from the
environment when its variable is set: `NETSODY_TEST_POSTGRES_URL`, `NETSODY_TEST_REDIS_URL`, or
`NETSODY_TEST_S3_ENDPOINT` with `NETSODY_TEST_S3_ACCESS_KEY` and `NETSODY_TEST_S3_SECRET_KEY`.
Otherwise it runs in a container started with testcontainers from a local image. Images are never
pulled: `compose/build-images` builds them, and a missing image skips the tests that need it.

Tests marked `docker` skip when no Docker engine responds, and tests marked `root` skip when the
tests do not run as root.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest

logger = logging.getLogger(__name__)

POSTGRES_IMAGE = os.environ.get("NETSODY_TEST_POSTGRES_IMAGE", "postgres:16-alpine")
REDIS_IMAGE = os.environ.get("NETSODY_TEST_REDIS_IMAGE", "redis:7-alpine")
S3_IMAGE = os.environ.get("NETSODY_TEST_S3_IMAGE", "minio/minio")

# Published container ports bind to loopback only, and clients connect there.
LOOPBACK = "127.0.0.1"
READY_TIMEOUT_SECONDS = 90.0
POLL_INTERVAL_SECONDS = 0.25
DOCKER_PING_TIMEOUT_SECONDS = 5
BUILD_HINT = "build the local images with `compose/build-images` (as root)"


@cache
def docker_unavailable_reason() -> str | None:
    """Return why no Docker engine can be used, or None when one responds to a ping."""
    try:
        import docker
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
        client.ping()
        client.close()
    except Exception as error:  # docker raises DockerException, requests and OS errors alike
        return f"no Docker engine responds ({error.__class__.__name__}: {error})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    for item in items:
        if "root" in item.keywords and not is_root:
            item.add_marker(pytest.mark.skip(reason="needs root for network namespaces"))
        if "docker" in item.keywords:
            reason = docker_unavailable_reason()
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"needs Docker: {reason}"))


def wait_until_ready(probe: Callable[[], Any], service: str, container: Any = None) -> None:
    """Call `probe` until it returns without raising, or fail after READY_TIMEOUT_SECONDS."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            probe()
            return
        except Exception as error:  # each client raises its own connection errors
            if time.monotonic() > deadline:
                logs = ""
                if container is not None:
                    stdout, stderr = container.get_logs()
                    logs = (stdout + stderr).decode(errors="replace")[-4000:]
                pytest.fail(
                    f"{service} was not ready after {READY_TIMEOUT_SECONDS:.0f} s: {error}\n{logs}"
                )
            time.sleep(POLL_INTERVAL_SECONDS)


def start_local_container(image: str, port: int, env: dict[str, str]) -> Any:
    """Start `image` from the local image store with `port` published on loopback."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs Docker: {reason}")

    import docker
    from testcontainers.core.config import ConnectionMode, testcontainers_config
    from testcontainers.core.container import DockerContainer

    # The test process may itself run inside a container (testcontainers then looks for a gateway
    # address). The engine publishes ports on this host's loopback all the same, so use that.
    testcontainers_config.ryuk_disabled = True
    testcontainers_config.connection_mode_override = ConnectionMode.docker_host
    testcontainers_config.tc_host_override = LOOPBACK

    client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"local image {image} not found: {BUILD_HINT}")
    finally:
        client.close()

    container = DockerContainer(image).with_envs(**env).with_kwargs(network="bridge")
    container.ports[f"{port}/tcp"] = (LOOPBACK, None)
    container.start()
    logger.info("started %s as container %s", image, container.get_container_id()[:12])
    return container


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database, `postgresql://user:password@host:port/database`."""
    url = os.environ.get("NETSODY_TEST_POSTGRES_URL")
    if url:
        yield url
        return

    import psycopg

    password = secrets.token_urlsafe(16)
    container = start_local_container(
        POSTGRES_IMAGE,
        5432,
        {"POSTGRES_USER": "netsody", "POSTGRES_PASSWORD": password, "POSTGRES_DB": "netsody"},
    )
    try:
        port = container.get_exposed_port(5432)
        url = f"postgresql://netsody:{password}@{LOOPBACK}:{port}/netsody"

        def probe() -> None:
            with psycopg.connect(url, connect_timeout=3) as connection:
                connection.execute("SELECT 1")

        wait_until_ready(probe, f"PostgreSQL ({POSTGRES_IMAGE})", container)
        yield url
    finally:
        container.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server, `redis://host:port/0`."""
    url = os.environ.get("NETSODY_TEST_REDIS_URL")
    if url:
        yield url
        return

    import redis

    container = start_local_container(REDIS_IMAGE, 6379, {})
    try:
        url = f"redis://{LOOPBACK}:{container.get_exposed_port(6379)}/0"

        def probe() -> None:
            client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
            try:
                client.ping()
            finally:
                client.close()

        wait_until_ready(probe, f"Redis ({REDIS_IMAGE})", container)
        yield url
    finally:
        container.stop()


def s3_client(settings: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings["endpoint_url"],
        aws_access_key_id=settings["access_key"],
        aws_secret_access_key=settings["secret_key"],
        region_name=settings["region"],
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 1},
        ),
    )


def ensure_bucket(settings: dict[str, str], service: str, container: Any = None) -> None:
    """Wait until the S3 endpoint responds, then create the bucket unless it exists."""
    client = s3_client(settings)
    wait_until_ready(client.list_buckets, service, container)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if settings["bucket"] not in existing:
        client.create_bucket(Bucket=settings["bucket"])


@pytest.fixture(scope="session")
def s3_settings() -> Iterator[dict[str, str]]:
    """S3-compatible storage: `endpoint_url`, `access_key`, `secret_key`, `bucket`, `region`."""
    endpoint = os.environ.get("NETSODY_TEST_S3_ENDPOINT")
    bucket = os.environ.get("NETSODY_TEST_S3_BUCKET", "netsody-test")
    region = os.environ.get("NETSODY_TEST_S3_REGION", "us-east-1")
    if endpoint:
        settings = {
            "endpoint_url": endpoint,
            "access_key": os.environ.get("NETSODY_TEST_S3_ACCESS_KEY", ""),
            "secret_key": os.environ.get("NETSODY_TEST_S3_SECRET_KEY", ""),
            "bucket": bucket,
            "region": region,
        }
        ensure_bucket(settings, f"S3 endpoint {endpoint}")
        yield settings
        return

    access_key = "netsody-test"
    secret_key = secrets.token_urlsafe(24)
    container = start_local_container(
        S3_IMAGE, 9000, {"MINIO_ROOT_USER": access_key, "MINIO_ROOT_PASSWORD": secret_key}
    )
    try:
        settings = {
            "endpoint_url": f"http://{LOOPBACK}:{container.get_exposed_port(9000)}",
            "access_key": access_key,
            "secret_key": secret_key,
            "bucket": bucket,
            "region": region,
        }
        ensure_bucket(settings, f"S3 ({S3_IMAGE})", container)
        yield settings
    finally:
        container.stop()
