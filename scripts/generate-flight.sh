#!/usr/bin/env bash
# Regenerates the Swift code of Arrow Flight's protocol (Protos/Flight.proto)
# into Sources/DissociatedIPCFlight/Generated/: the messages (swift-protobuf)
# and the service's client and server (grpc-swift 2). The output is
# committed; run this only after changing the .proto or the generators'
# versions. Needs protoc (Debian's protobuf-compiler, installed here if
# missing) and builds both generator plugins from this package's
# dependencies, so they match the libraries the code links.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/timestamp.proto ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev >/dev/null
fi
swift build -c release --product protoc-gen-swift
swift build -c release --product protoc-gen-grpc-swift-2
bin=$(swift build -c release --show-bin-path)
out=Sources/DissociatedIPCFlight/Generated
mkdir -p "$out"
common=(Visibility=Public FileNaming=DropPath UseAccessLevelOnImports=true)
protoc -I Protos -I /usr/include \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --swift_out="$out" "${common[@]/#/--swift_opt=}" \
  --grpc-swift-2_out="$out" "${common[@]/#/--grpc-swift-2_opt=}" --grpc-swift-2_opt=Server=true --grpc-swift-2_opt=Client=true \
  Protos/Flight.proto
# The Flight target builds empty without the Flight trait (no gRPC then).
for file in "$out/Flight.pb.swift" "$out/Flight.grpc.swift"; do
  { echo "#if Flight"; cat "$file"; [ -z "$(tail -c 1 "$file")" ] || echo; echo "#endif"; } > "$file.tmp" && mv "$file.tmp" "$file"
done
echo "generate-flight: wrote $out/Flight.pb.swift and $out/Flight.grpc.swift ($(protoc --version))"
