#!/bin/sh
# Start Triton over the exported repository ($DNSVR_MODEL_REPOSITORY, default /models) with dnsvr's security
# settings (the production image's entrypoint):
#   - the access token: DNSVR_ACCESS_TOKEN (or its hex SHA-256 in DNSVR_ACCESS_TOKEN_SHA256) makes index and
#     delete need the `dnsvr-token` header, search and stats too unless DNSVR_OPEN_SEARCH=1; Triton hands that
#     header to the pipelines (--grpc-header-forward-pattern); only its digest stays in the environment;
#   - Triton's admin APIs (model repository and config, logging, trace, statistics, shared memory) answer only
#     requests carrying DNSVR_ADMIN_KEY (a random one per start unless given);
#   - gRPC TLS when DNSVR_TLS_CERT and DNSVR_TLS_KEY name PEM files (DNSVR_TLS_CLIENT_CA: mutual TLS); HTTP,
#     which Triton serves without TLS, then listens on 127.0.0.1 only.
# Extra arguments are passed to tritonserver.
set -eu
if [ -n "${DNSVR_ACCESS_TOKEN:-}" ] && [ -z "${DNSVR_ACCESS_TOKEN_SHA256:-}" ]; then
    DNSVR_ACCESS_TOKEN_SHA256=$(printf %s "$DNSVR_ACCESS_TOKEN" | sha256sum | cut -d' ' -f1)
    export DNSVR_ACCESS_TOKEN_SHA256
fi
unset DNSVR_ACCESS_TOKEN
admin_key=${DNSVR_ADMIN_KEY:-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
restricted="model-repository,model-config,shared-memory,statistics,trace,logging:dnsvr-admin=$admin_key"
set -- tritonserver --model-repository="${DNSVR_MODEL_REPOSITORY:-/models}" --exit-timeout-secs=10 --log-verbose=0 \
    --grpc-header-forward-pattern='^dnsvr-token$' --http-header-forward-pattern='^dnsvr-token$' \
    --grpc-restricted-protocol="$restricted" --http-restricted-api="$restricted" "$@"
if [ -n "${DNSVR_TLS_CERT:-}" ]; then
    set -- "$@" --grpc-use-ssl=true --grpc-server-cert="$DNSVR_TLS_CERT" --grpc-server-key="$DNSVR_TLS_KEY" \
        --http-address=127.0.0.1
    if [ -n "${DNSVR_TLS_CLIENT_CA:-}" ]; then
        set -- "$@" --grpc-use-ssl-mutual=true --grpc-root-cert="$DNSVR_TLS_CLIENT_CA"
    fi
fi
exec "$@"
