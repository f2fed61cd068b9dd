#!/usr/bin/env bash
# Generates DEVELOPMENT-ONLY TLS material for the three-server NATS cluster in this folder:
#
#   ca.pem / ca-key.pem            a throwaway certificate authority ("Halcyon DEV CA")
#   server.pem / server-key.pem    one server certificate shared by n1, n2 and n3, for both the client
#                                  listener and the routes (serverAuth + clientAuth: on a route each server
#                                  is also the client of the others). SANs: localhost, n1, n2, n3, 127.0.0.1, ::1
#   client.pem / client-key.pem    a client certificate for the halcyon node (CN halcyon-node, clientAuth)
#
# Usage: deploy/nats/cluster/gen-dev-certs.sh [OUT_DIR]      (default: deploy/nats/cluster/certs)
#
# Idempotent: files already present and valid for at least another day are kept (so is the CA, so that
# certificates issued earlier stay valid); only what is missing or about to expire is created. A new CA
# (because the old one is missing or expiring) reissues everything. Delete the folder to start again.
#
# Keys are ECDSA P-256, valid 30 days, and unencrypted on disk. NEVER use them outside a laptop or a test:
# production certificates come from the partnership's certificate authority, one per server, with the
# server's real DNS names, and the keys never leave the server.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/certs}"
openssl="${OPENSSL:-openssl}"
days=30

cat >&2 <<'EOF'
gen-dev-certs: *** DEVELOPMENT ONLY *** these certificates and unencrypted keys are for a laptop or a test.
gen-dev-certs: production certificates come from the partnership's certificate authority.
EOF

mkdir -p "$out"
chmod 700 "$out"
cd "$out"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

key() { # key FILE
  "$openssl" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

fresh() { # fresh CERT: present and valid for at least another day
  [ -s "$1" ] && "$openssl" x509 -in "$1" -noout -checkend 86400 >/dev/null 2>&1
}

if ! fresh ca.pem || [ ! -s ca-key.pem ]; then
  rm -f ca.pem ca-key.pem server.pem server-key.pem client.pem client-key.pem
  key ca-key.pem
  "$openssl" req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/O=Halcyon DEV/CN=Halcyon DEV CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem
  echo "gen-dev-certs: created $out/ca.pem" >&2
else
  echo "gen-dev-certs: keeping $out/ca.pem" >&2
fi

issue() { # issue NAME CN EXTENSIONS
  local name="$1" cn="$2" ext="$3"
  if fresh "$name.pem" && [ -s "$name-key.pem" ]; then
    echo "gen-dev-certs: keeping $out/$name.pem" >&2
    return
  fi
  key "$name-key.pem"
  "$openssl" req -new -key "$name-key.pem" -subj "/O=Halcyon DEV/CN=$cn" -out "$tmp/$name.csr"
  printf '%s\n' "$ext" >"$tmp/$name.ext"
  "$openssl" x509 -req -in "$tmp/$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -CAserial "$tmp/ca.srl" -sha256 -days "$days" -extfile "$tmp/$name.ext" -out "$name.pem" 2>/dev/null
  echo "gen-dev-certs: created $out/$name.pem (CN $cn)" >&2
}

issue server halcyon-nats "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,DNS:n1,DNS:n2,DNS:n3,IP:127.0.0.1,IP:::1"

issue client halcyon-node "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

"$openssl" verify -CAfile ca.pem server.pem client.pem >&2
