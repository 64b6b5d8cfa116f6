#!/bin/sh
# Generates the certificates the TLS suites use, with the openssl CLI, into
# the directory given as $1 (in the build tree). Everything is made fresh on
# each run; nothing here is committed.
#
#   ca.pem ca.key            the test root CA ("uvctx test CA")
#   server.pem server.key    leaf for localhost / 127.0.0.1 / ::1, by ca
#   chain.pem                server.pem followed by ca.pem
#   expired.pem expired.key  leaf for localhost by ca, expired in 2021
#   other-ca.pem             an unrelated CA nobody trusts
#   stranger.pem stranger.key  leaf for localhost signed by other-ca
#   mismatch.key             a key that matches none of the certificates
#   cn-only.pem cn-only.key  leaf by ca with CN=localhost and no SAN at all
set -eu
out=$1
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ossl() { openssl "$@" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }; }

key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ca() { # name subject
  key "$1.key"
  ossl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem"
}

cat > "$tmp/leaf.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT

leaf() { # name ca
  key "$1.key"
  ossl req -new -key "$1.key" -subj "/CN=localhost" -out "$tmp/$1.csr"
  ossl x509 -req -in "$tmp/$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -CAserial "$tmp/$2.srl" -days 825 \
    -extfile "$tmp/leaf.ext" -out "$1.pem"
}

ca ca "uvctx test CA"
ca other-ca "uvctx stranger CA"
leaf server ca
leaf stranger other-ca
cat server.pem ca.pem > chain.pem
key cn-only.key
ossl req -new -key cn-only.key -subj "/CN=localhost" -out "$tmp/cn-only.csr"
grep -v subjectAltName "$tmp/leaf.ext" > "$tmp/cn-only.ext"
ossl x509 -req -in "$tmp/cn-only.csr" -CA ca.pem -CAkey ca.key \
  -CAcreateserial -CAserial "$tmp/ca.srl" -days 825 \
  -extfile "$tmp/cn-only.ext" -out cn-only.pem
key mismatch.key

# An expired leaf: `openssl x509` in OpenSSL 3.0 cannot back-date, `openssl
# ca` can, with a throwaway database.
key expired.key
ossl req -new -key expired.key -subj "/CN=localhost" -out "$tmp/expired.csr"
: > "$tmp/index.txt"
echo 1000 > "$tmp/serial"
cat > "$tmp/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $tmp/index.txt
serial = $tmp/serial
new_certs_dir = $tmp
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
CNF
ossl ca -batch -config "$tmp/ca.cnf" -cert ca.pem -keyfile ca.key \
  -in "$tmp/expired.csr" -startdate 20200101000000Z \
  -enddate 20210101000000Z -extfile "$tmp/leaf.ext" -notext \
  -out expired.pem
echo ok > stamp
