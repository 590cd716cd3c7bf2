"""Job files in S3-compatible object storage (``MESHFORGE_SERVICE_STORAGE_URL=s3://bucket/prefix``).

Without a storage URL a job's files live only in its folder under the data dir
(:meth:`~meshforge.service.storage.JobStore.job_dir`). With one, the bucket holds them, under the same
names, at ``<prefix>/jobs/<job id>/<name>`` (``input/<upload>``, ``raw.mfraw``, ``cutout.png``,
``result.glb``, ``result.obj.zip``, ``result.ply.ply``, ``result.stl.stl``), and every process's job folder
is a local working copy: the API server uploads a submission's input before the job is queued, a worker
fetches the input it needs, writes its results locally and uploads them before the ledger says
``succeeded`` (the GLB last), and an API server fetches a result on its first download (or answers with a
presigned URL). Deleting or expiring a job deletes its objects too.

The client is boto3's: the endpoint comes from ``AWS_ENDPOINT_URL`` (MinIO, Ceph, moto, …) and the
credentials and region from the usual ``AWS_*`` variables or files.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any


class S3Artifacts:
    """The job files of one ``s3://bucket/prefix``.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix``.

    Raises:
        ImportError: boto3 is missing (the ``scale`` extra).
    """

    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        if not url.startswith("s3://"):
            raise ValueError("storage URL must start with s3://")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client: Any = boto3.client(
            "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
        )

    def key(self, job_id: str, name: str) -> str:
        """The object key of file ``name`` (a path inside the job's folder) of job ``job_id``."""
        if not job_id.isalnum() or name.startswith("/") or ".." in Path(name).parts:
            raise ValueError("bad job id or file name")
        return "/".join(p for p in (self.prefix, "jobs", job_id, name) if p)

    def put_file(self, job_id: str, name: str, path: Path) -> None:
        """Upload a local file as ``name`` of the job (replacing an earlier object of that name)."""
        self.client.upload_file(str(path), self.bucket, self.key(job_id, name))

    def put_bytes(self, job_id: str, name: str, data: bytes) -> None:
        """Store ``data`` as ``name`` of the job."""
        self.client.put_object(Bucket=self.bucket, Key=self.key(job_id, name), Body=data)

    def fetch(self, job_id: str, name: str, dest: Path) -> bool:
        """Download ``name`` of the job to ``dest`` (atomically: a temporary file renamed into place).

        Returns:
            False when there is no such object.
        """
        from botocore.exceptions import ClientError

        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fetch-", dir=dest.parent)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.key(job_id, name), tmp)
        except ClientError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        return True

    def exists(self, job_id: str, name: str) -> bool:
        """Whether the job has an object ``name``."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(job_id, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def names(self, job_id: str) -> list[str]:
        """The file names the job has in the bucket (sorted)."""
        base = self.key(job_id, "x")[:-1]
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            out += [obj["Key"][len(base) :] for obj in page.get("Contents", ())]
        return sorted(out)

    def delete(self, job_id: str, keep: str | None = None) -> list[str]:
        """Delete the job's objects (all of them, or all but those under the folder ``keep``).

        Returns:
            The names deleted.
        """
        gone = [n for n in self.names(job_id) if keep is None or not n.startswith(keep.rstrip("/") + "/")]
        for i in range(0, len(gone), 1000):
            chunk = [{"Key": self.key(job_id, n)} for n in gone[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return gone

    def presign(self, job_id: str, name: str, *, filename: str, media_type: str, expires_s: int = 3600) -> str:
        """A URL that downloads ``name`` of the job without credentials for ``expires_s`` seconds, saved as
        ``filename`` with ``Content-Type: media_type``."""
        return str(
            self.client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.bucket,
                    "Key": self.key(job_id, name),
                    "ResponseContentDisposition": f'attachment; filename="{filename}"',
                    "ResponseContentType": media_type,
                },
                ExpiresIn=expires_s,
            )
        )

    def ping(self) -> None:
        """Check that the bucket can be reached (raises botocore's error otherwise)."""
        self.client.head_bucket(Bucket=self.bucket)


def open_artifacts(url: str | None) -> S3Artifacts | None:
    """The object store of ``url`` (``s3://…``), or None for job files kept only in the data dir."""
    if not url:
        return None
    return S3Artifacts(url)


def publish(artifacts: S3Artifacts, job_id: str, folder: Path, names: list[str]) -> None:
    """Upload the files ``names`` of a job's local ``folder`` that exist, in that order (put the file whose
    presence means "complete", the GLB, last)."""
    for name in names:
        path = folder / name
        if path.is_file():
            artifacts.put_file(job_id, name, path)


def remove_local(folder: Path) -> None:
    """Delete a job's local working copy (its files are in the bucket)."""
    import shutil

    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
