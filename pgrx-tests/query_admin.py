"""Fills and inspects queues of a Query-only SQS emulator for the integration tests. boto3 1.26's
SQS client still speaks the Query protocol, as the take-home's own tools did.

Usage: query_admin.py ENDPOINT create NAME | send URL (JSON list of bodies on stdin)
       | send-records URL FILE | counts URL | list"""
import json
import sys

import boto3

endpoint, command, *args = sys.argv[1:]
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
if command == "create":
    print(sqs.create_queue(QueueName=args[0])["QueueUrl"])
elif command == "send":
    bodies = json.load(sys.stdin)
    for start in range(0, len(bodies), 10):
        entries = [{"Id": f"m{i}", "MessageBody": b} for i, b in enumerate(bodies[start:start + 10])]
        failed = sqs.send_message_batch(QueueUrl=args[0], Entries=entries).get("Failed")
        assert not failed, failed
elif command == "send-records":
    # As the take-home sends its data: one message per record, the body json.dumps(record).
    for record in json.load(open(args[1])):
        sqs.send_message(QueueUrl=args[0], MessageBody=json.dumps(record))
elif command == "counts":
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=args[0], AttributeNames=names)["Attributes"]
    print(" ".join(attributes.get(n, "0") for n in names))
elif command == "list":
    sqs.list_queues()
else:
    sys.exit(f"unknown command {command}")
