#!/usr/bin/env bash
# LocalStack init hook: creates login-queue and fills it with generated login messages of the
# take-home's shape, the first of each of five batches malformed in a different way.
set -euo pipefail
queue_url=$(awslocal sqs create-queue --queue-name login-queue --query QueueUrl --output text)
ips() { echo "$((RANDOM % 223 + 1)).$((RANDOM % 256)).$((RANDOM % 256)).$((RANDOM % 256))"; }
login() {
  local locale='null'
  ((RANDOM % 3)) && locale="\"$(shuf -n1 -e RU PH ID FR PT US BR)\""
  printf '{"user_id": "%s", "app_version": "%s", "device_type": "%s", "ip": "%s", "locale": %s, "device_id": "%03d-%02d-%04d"}' \
    "$(cat /proc/sys/kernel/random/uuid)" "$((RANDOM % 4)).$((RANDOM % 10)).$((RANDOM % 10))" \
    "$(shuf -n1 -e android ios)" "$(ips)" "$locale" $((RANDOM % 1000)) $((RANDOM % 100)) $((RANDOM % 10000))
}
malformed=('{"foo": "oops_wrong_msg_type", "bar": "123"}' 'not json' '[1, 2, 3]'
           '{"user_id": 42}' '{"user_id": "u", "ip": null}')
for batch in $(seq 0 9); do
  entries='['
  for i in $(seq 0 9); do
    if ((i == 0 && batch < ${#malformed[@]})); then body=${malformed[$batch]}; else body=$(login); fi
    escaped=${body//\\/\\\\}
    entries+="{\"Id\": \"m$i\", \"MessageBody\": \"${escaped//\"/\\\"}\"},"
  done
  awslocal sqs send-message-batch --queue-url "$queue_url" --entries "${entries%,}]" >/dev/null
done
echo "login-queue: 100 messages (5 malformed)"
