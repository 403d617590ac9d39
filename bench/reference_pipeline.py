"""The pipeline users run today, kept as the benchmark's reference: boto3 receives 10 messages,
they are masked with hashlib, psycopg2 inserts them with executemany, the transaction commits,
and delete_message_batch removes them. Drains N messages, then prints one JSON line: wall
seconds, this process's CPU seconds and its backend's, all counted from after the imports and
connections (start-up is not charged to it).

Usage: reference_pipeline.py QUEUE_URL DSN N   (AWS_* credentials from the environment)
"""
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
from urllib.parse import urlsplit

import boto3
import psycopg2

INSERT = """INSERT INTO user_logins
    (user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date)
    VALUES (%s, %s, %s, %s, %s, %s, %s)"""


def backend_cpu(pid):
    """Seconds the threads of a process on this machine have run (the scheduler's exact count,
    as time.process_time() counts this process's)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return total / 1e9


def main():
    queue_url, dsn, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    key = os.environ.get("PII_KEY", "").encode()
    parts = urlsplit(queue_url)
    sqs = boto3.client("sqs", endpoint_url=f"{parts.scheme}://{parts.netloc}",
                       region_name=os.environ.get("AWS_REGION", "us-east-1"))
    db = psycopg2.connect(dsn)
    cur = db.cursor()
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    db.commit()

    def mask(value):
        if key:
            return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
        return hashlib.sha256(value.encode()).hexdigest()

    started, cpu0, backend0 = time.monotonic(), time.process_time(), backend_cpu(backend)
    done = 0
    while done < total:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            continue
        today = datetime.date.today()
        rows = []
        for m in messages:
            b = json.loads(m["Body"])
            rows.append((b["user_id"], b["device_type"], mask(b["ip"]), mask(b["device_id"]),
                         b.get("locale"), b["app_version"], today))
        cur.executemany(INSERT, rows)
        db.commit()
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )
        done += len(messages)
    print(json.dumps({
        "messages": done,
        "seconds": time.monotonic() - started,
        "cpu": time.process_time() - cpu0,
        "backend_cpu": backend_cpu(backend) - backend0,
    }))


if __name__ == "__main__":
    main()
