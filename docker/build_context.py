"""Lays out, in an empty directory, what the build stage of Dockerfile.postgres sees: the build
context as Docker sends it (the checkout filtered by .dockerignore), then the stage's WORKDIR as
its COPY instructions fill it. Prints that WORKDIR, where CI then runs the stage's package step,
so that a file the image leaves out fails CI as it would fail `docker build`.

Usage: build_context.py OUT_DIR"""
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ignore_rules():
    """(regex, excluded) per .dockerignore line, in order: the last rule that matches wins."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        excluded = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        rules.append((re.compile(regex + "$"), excluded))
    return rules


def sent(path, rules):
    """Whether Docker sends `path` (relative, with /): a rule that matches it or a parent applies."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = True
    for regex, excluded in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = not excluded
    return verdict


def build_context(out):
    rules = ignore_rules()
    for directory, subdirs, files in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT)
        subdirs[:] = [d for d in subdirs if d != ".git" or rel != Path(".")]
        for name in files:
            path = (rel / name).as_posix()
            if sent(path, rules):
                target = out / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / path, target)


def build_stage_workdir(context, image):
    """Runs the first stage's WORKDIR and COPY instructions (not COPY --from) into `image`."""
    dockerfile = (ROOT / "Dockerfile.postgres").read_text()
    # Join continued lines, then keep the first stage only.
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    workdir = Path("/")
    stages = 0
    for line in lines:
        words = line.split()
        if not words:
            continue
        instruction = words[0].upper()
        if instruction == "FROM":
            stages += 1
            if stages > 1:
                break
        elif instruction == "WORKDIR":
            workdir = workdir / words[1]
        elif instruction == "COPY" and not any(w.startswith("--from") for w in words):
            args = [w for w in words[1:] if not w.startswith("--")]
            *sources, dest = args
            dest_dir = workdir / dest
            for source in sources:
                src = context / source
                if src.is_dir():
                    shutil.copytree(src, image / dest_dir.relative_to("/"), dirs_exist_ok=True)
                else:
                    into = dest.endswith("/") or len(sources) > 1 or dest == "."
                    target = image / dest_dir.relative_to("/") / (src.name if into else "")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
    return image / workdir.relative_to("/")


out = Path(sys.argv[1])
build_context(out / "context")
print(build_stage_workdir(out / "context", out / "image"))
