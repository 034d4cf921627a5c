"""Round trips through the shared service fixtures of tests/integration/conftest.py."""

import uuid

import psycopg
import redis

from ..conftest import s3_client


def test_postgres_runs_sql(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, connect_timeout=10) as connection:
        connection.execute("CREATE TEMPORARY TABLE probe (id integer PRIMARY KEY, name text)")
        connection.execute("INSERT INTO probe VALUES (%s, %s), (%s, %s)", (1, "a", 2, "b"))
        rows = connection.execute("SELECT name FROM probe ORDER BY id").fetchall()
        version = connection.execute("SHOW server_version_num").fetchone()

    assert rows == [("a",), ("b",)]
    assert version is not None
    assert int(version[0]) >= 150000


def test_redis_round_trip(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    key = f"netsody-test:{uuid.uuid4()}"
    try:
        client.set(key, b"value", ex=60)
        assert client.get(key) == b"value"
        assert client.incr(f"{key}:counter") == 1
    finally:
        client.delete(key, f"{key}:counter")
        client.close()


def test_s3_put_get(s3_settings: dict[str, str]) -> None:
    client = s3_client(s3_settings)
    key = f"harness/{uuid.uuid4()}.txt"
    body = b"netsody object storage round trip"

    client.put_object(Bucket=s3_settings["bucket"], Key=key, Body=body)
    fetched = client.get_object(Bucket=s3_settings["bucket"], Key=key)["Body"].read()
    listed = client.list_objects_v2(Bucket=s3_settings["bucket"], Prefix="harness/")
    client.delete_object(Bucket=s3_settings["bucket"], Key=key)

    assert fetched == body
    assert key in [entry["Key"] for entry in listed.get("Contents", [])]
