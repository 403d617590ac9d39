"""moto's server with one race mended, for the tests' emulator processes.

moto's SQS Queue.delete_message (moto/sqs/models.py, 4.1 and 5.x) rebuilds the queue's message
list without taking the lock under which sends append to it, so a message sent while another is
deleted can vanish. Real SQS loses nothing that way, and tests that send while a worker deletes
(the fault tests, the package test) lost a few messages in a thousand on a busy machine. Deletes
here take the sends' lock (a re-entrant Condition); everything else is moto's own.
"""
import sys

import moto.sqs.models as models
from moto.server import main

_delete_message = models.Queue.delete_message


def delete_message(self, receipt_handle):
    with self._messages_lock:
        return _delete_message(self, receipt_handle)


models.Queue.delete_message = delete_message

if __name__ == "__main__":
    sys.exit(main())
