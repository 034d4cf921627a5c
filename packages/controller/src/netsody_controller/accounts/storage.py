"""Object storage of profile pictures in the S3 bucket S3_BUCKET.

The client follows S3_ENDPOINT_URL, S3_REGION, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY and
S3_FORCE_PATH_STYLE (path-style addressing, which MinIO needs). The bucket is created on the
first upload that finds it missing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from netsody_controller.errors import ControllerError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECS = 5
READ_TIMEOUT_SECS = 30
STREAM_CHUNK_BYTES = 64 * 1024
_MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404"})
_MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "404"})


class StorageError(ControllerError):
    """The object storage failed or is unreachable."""


@dataclass(frozen=True)
class StoredObject:
    """An object being read from storage: its chunks, content type and length."""

    chunks: Iterator[bytes]
    content_type: str
    length: int


def picture_key(user_id: object) -> str:
    return f"profile-pictures/{user_id}"


def client():
    """Return an S3 client for the current settings."""
    style = "path" if settings.S3_FORCE_PATH_STYLE else "auto"
    return boto3.client(
        "s3",
        endpoint_url=settings.S3_ENDPOINT_URL or None,
        region_name=settings.S3_REGION or None,
        aws_access_key_id=settings.S3_ACCESS_KEY_ID or None,
        aws_secret_access_key=settings.S3_SECRET_ACCESS_KEY or None,
        config=Config(
            s3={"addressing_style": style},
            connect_timeout=CONNECT_TIMEOUT_SECS,
            read_timeout=READ_TIMEOUT_SECS,
            retries={"max_attempts": 2},
        ),
    )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _create_bucket(s3, bucket: str) -> None:
    options = {}
    region = settings.S3_REGION
    if region and region != "us-east-1":
        options["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=bucket, **options)
    except ClientError as error:
        if _error_code(error) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            raise
    logger.info("created the profile picture bucket", extra={"bucket": bucket})


def put_object(key: str, content: bytes, content_type: str) -> None:
    """Store `content` under `key` in S3_BUCKET, creating the bucket when missing."""
    bucket = settings.S3_BUCKET
    s3 = client()
    try:
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=content, ContentType=content_type)
        except ClientError as error:
            if _error_code(error) not in _MISSING_BUCKET_CODES:
                raise
            _create_bucket(s3, bucket)
            s3.put_object(Bucket=bucket, Key=key, Body=content, ContentType=content_type)
    except (BotoCoreError, ClientError) as error:
        raise StorageError(
            f"Storing {key} in the bucket {bucket} at {settings.S3_ENDPOINT_URL or 'AWS'} "
            f"failed: {error}; check the S3_* settings"
        ) from error


def open_object(key: str) -> StoredObject | None:
    """Return the object under `key` for streaming, or None when it does not exist."""
    try:
        response = client().get_object(Bucket=settings.S3_BUCKET, Key=key)
    except ClientError as error:
        if _error_code(error) in _MISSING_OBJECT_CODES | _MISSING_BUCKET_CODES:
            return None
        raise StorageError(f"Reading {key} from the bucket {settings.S3_BUCKET} failed") from error
    except BotoCoreError as error:
        raise StorageError(f"Reading {key} from the bucket {settings.S3_BUCKET} failed") from error
    body = response["Body"]
    return StoredObject(
        chunks=body.iter_chunks(STREAM_CHUNK_BYTES),
        content_type=response.get("ContentType", "application/octet-stream"),
        length=int(response.get("ContentLength", 0)),
    )
