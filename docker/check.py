"""Static checks of the Docker files, which no machine of ours can build (no Docker engine):
the compose files parse and hold the services, ports, health checks and settings the README
promises, and the Dockerfile builds with the scripts CI runs and copies paths that
`cargo pgrx package` really makes (its output directory is the one argument)."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "http://localstack:4566/000000000000/login-queue"
failures = []
passed = 0


def check(what, ok):
    global passed
    if ok:
        passed += 1
    else:
        failures.append(what)


class Loader(yaml.SafeLoader):
    pass


# Compose's !reset tag: parse it as the plain value it resets to.
Loader.add_constructor("!reset", lambda loader, node: loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None)

compose = yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=Loader)
services = compose.get("services", {})
check("services are localstack and postgres", set(services) == {"localstack", "postgres"})
ls, pg = services.get("localstack", {}), services.get("postgres", {})
check("localstack uses a pinned official image", re.fullmatch(r"localstack/localstack:\d+\.\d+\.\d+", ls.get("image", "")))
check("localstack publishes 4566", "4566:4566" in ls.get("ports", []))
check("localstack mounts the init hook", any("ready.d:/etc/localstack/init/ready.d" in v for v in ls.get("volumes", [])))
health = str(ls.get("healthcheck", {}).get("test"))
check("localstack health waits for login-queue", "login-queue" in health)
check("localstack health waits for the init hook to finish", "_localstack/init/ready" in health and "completed" in health)
check("postgres builds Dockerfile.postgres", pg.get("build", {}).get("dockerfile") == "Dockerfile.postgres")
env = pg.get("environment", {})
check("postgres points the worker at LocalStack's queue", env.get("SQS_QUEUE_URL") == QUEUE)
check("postgres has test credentials and a region", env.get("AWS_ACCESS_KEY_ID") == "test" and env.get("AWS_REGION"))
check("postgres does not probe instance metadata", env.get("AWS_EC2_METADATA_DISABLED") == "true")
check("the masking key is a compose secret, installed as a file", "sqs_ingest_pii_key" in pg.get("secrets", []) and "sqs_ingest_pii_key" in compose.get("secrets", {}) and env.get("SQS_INGEST_PII_KEY_SECRET") == "/run/secrets/sqs_ingest_pii_key" and env.get("SQS_INGEST_PII_KEY_FILE"))
check("the key file is neither in the repository nor in the build context", "docker/pii_key" in (ROOT / ".gitignore").read_text() and "docker/pii_key" in (ROOT / ".dockerignore").read_text())
check("no key in the environment", not any("KEY" in k and k not in ("SQS_INGEST_PII_KEY_SECRET", "SQS_INGEST_PII_KEY_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") for k in env))
check("postgres publishes 5432", "5432:5432" in pg.get("ports", []))
check("postgres keeps its data in a volume", "pgdata:/var/lib/postgresql/data" in pg.get("volumes", []) and "pgdata" in compose.get("volumes", {}))
check("postgres waits for a healthy localstack", pg.get("depends_on", {}).get("localstack", {}).get("condition") == "service_healthy")
check("postgres has a pg_isready health check", "pg_isready" in str(pg.get("healthcheck", {}).get("test")))

override = yaml.load((ROOT / "docker-compose.takehome.yml").read_text(), Loader=Loader)
check("take-home override uses the take-home's LocalStack image", override["services"]["localstack"]["image"] == "fetchdocker/data-takehome-localstack")
mounted = [v.split(":")[0] for v in override["services"]["postgres"]["volumes"]]
check("take-home override mounts files that exist", all((ROOT / m).exists() for m in mounted if m.startswith("./")))
data = [v.split(":")[0] for v in override["services"]["postgres"]["volumes"] if v.split(":")[1] == "/var/lib/postgresql/data"]
check("take-home override keeps its data in a volume of its own", len(data) == 1 and data[0] != "pgdata" and data[0] in override.get("volumes", {}))

dockerfile = (ROOT / "Dockerfile.postgres").read_text()
froms = re.findall(r"^FROM (\S+)", dockerfile, re.M)
check("both stages are the official image of the PG_TAG build argument", len(froms) == 2 and all(f == "postgres:${PG_TAG}" for f in froms))
check("PG_TAG defaults to a pinned PostgreSQL 15 bookworm", re.search(r"^ARG PG_TAG=15\.\d+-bookworm$", dockerfile, re.M))
check("the build packages for the image's own major", '--features "pg${PG_MAJOR}"' in dockerfile)
check("the build stage runs CI's own setup script", "bash scripts/setup.sh --build-only" in dockerfile)
build_stage = dockerfile.split("\nFROM ")[1]
setup, copy_all = build_stage.find("bash scripts/setup.sh --build-only"), build_stage.find("\nCOPY . .")
check("the build stage copies the whole filtered context", copy_all > 0 and (ROOT / ".dockerignore").exists())
check("the toolchain is installed before the sources are copied", 0 < setup < copy_all)
check("the build stage compiles against the final stage's minor where it can", 'postgresql-server-dev-${PG_MAJOR}=${PG_VERSION}' in build_stage)
check("the build stage packages with cargo pgrx", "cargo pgrx package" in dockerfile)
package = Path(sys.argv[1])
# The default major's paths: the package CI makes is for 15.
copied = [p.replace("${PG_MAJOR}", "15") for p in re.findall(r"^COPY --from=build /out/(\S+)", dockerfile, re.M)]
check("the final stage copies the packaged library and extension files", len(copied) == 2)
for path in copied:
    check(f"the package holds {path}", any((package / path).iterdir()) if (package / path).is_dir() else False)
final_stage = dockerfile.split("\nFROM ")[-1]
check("the final stage installs pg_cron of its major", '"postgresql-${PG_MAJOR}-cron"' in final_stage)
# The postgres image has no CA certificates; without them SQS's TLS certificate is refused.
check("the final stage installs the CA certificates", re.search(r"apt-get install [^\n]*\bca-certificates\b", final_stage))
check("both libraries are preloaded", "shared_preload_libraries = 'sqs_ingest,pg_cron'" in dockerfile)
check("the image runs as postgres", re.search(r"^USER postgres$", dockerfile, re.M))
check("the image's entrypoint installs the key, then runs the official one", 'ENTRYPOINT ["sqs-ingest-entrypoint.sh"]' in dockerfile and 'CMD ["postgres"]' in dockerfile)
entrypoint = (ROOT / "docker/entrypoint.sh").read_text()
check("the entrypoint installs the key file mode 600 and execs docker-entrypoint.sh", 'install -m 600 "$SQS_INGEST_PII_KEY_SECRET" "$SQS_INGEST_PII_KEY_FILE"' in entrypoint and 'exec docker-entrypoint.sh "$@"' in entrypoint)
check("the entrypoint is executable", (ROOT / "docker/entrypoint.sh").stat().st_mode & 0o111)
check("no secret is baked in", not re.search(r"^(ENV|ARG) .*(SECRET|PASSWORD|KEY)", dockerfile, re.M))
for path in ["docker/initdb.d", "docker/localstack/ready.d"]:
    for script in (ROOT / path).iterdir():
        check(f"{script.name} is executable", script.stat().st_mode & 0o111)
init = (ROOT / "docker/initdb.d/10-sqs-ingest.sh").read_text()
check("the init script creates both extensions", "CREATE EXTENSION IF NOT EXISTS sqs_ingest" in init and "CREATE EXTENSION IF NOT EXISTS pg_cron" in init)
check("the init script restarts before creating pg_cron", 0 < init.find("pg_ctl -D \"$PGDATA\" -m fast -w restart") < init.find("CREATE EXTENSION IF NOT EXISTS pg_cron"))
for script in ["docker/initdb.d/10-sqs-ingest.sh", "docker/localstack/ready.d/10-login-queue.sh", "scripts/setup.sh", "Dockerfile.postgres"]:
    attr = subprocess.run(["git", "-C", str(ROOT), "check-attr", "eol", "--", script], capture_output=True, text=True).stdout
    check(f"{script} is checked out with LF line endings everywhere", attr.strip().endswith("eol: lf"))
check("the init script takes the queue URL from the environment", "SQS_QUEUE_URL" in init)
check("the init script sets the key file's path, never a key", "sqs_ingest.pii_key_file" in init and "sqs_ingest.pii_key =" not in init and "sqs_ingest.pii_key'" not in init)

for f in failures:
    print(f"FAILED: {f}")
print(f"docker: {passed} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)
