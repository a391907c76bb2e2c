#!/usr/bin/env bash
# scripts/pki.sh — a local certificate authority for pixd's HTTPS and mutual TLS (openssl CLI).
# For development, tests and benchmarks only: keys are unencrypted files.
#
#   pki.sh ca DIR [NAME]                       DIR/NAME.key + DIR/NAME.crt, a self-signed CA (default "ca")
#   pki.sh server DIR [CA]                     DIR/server.{key,crt} for localhost, 127.0.0.1 and ::1 (and the
#                                              names in $PKI_SERVER_NAMES, e.g. "DNS:pixd"), signed by CA
#   pki.sh client DIR NAME [CA] [DAYS]         DIR/NAME.{key,crt} (CN=NAME, clientAuth), signed by CA;
#                                              DAYS < 0 makes a certificate that has already expired
#   pki.sh credential CERT                     prints "cert:<sha256 of the DER>", the credential pixd passes
#                                              to the database for this client certificate
#   pki.sh fingerprint CERT                    prints the 64 hex digits alone (pix_certificate_add's argument)
#
# CA defaults to "ca" (DIR/ca.crt, DIR/ca.key). Keys are EC P-256: short handshakes. Every
# certificate lives 30 days unless DAYS says otherwise.
set -euo pipefail

DAYS=30

die() { echo "pki.sh: $*" >&2; exit 2; }

new_key() { # file
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 600 "$1"
}

sign() { # dir name ca days extfile-content subject
    local dir=$1 name=$2 ca=$3 days=$4 ext=$5 subject=$6
    [[ -f "$dir/$ca.crt" && -f "$dir/$ca.key" ]] || die "no CA $dir/$ca.{crt,key} (run: pki.sh ca $dir $ca)"
    new_key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$dir/$name.ext"
    # -days may be negative (an expired certificate for the tests); a random serial per certificate
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days "$days" -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr" "$dir/$name.ext"
}

cmd=${1:-}
case $cmd in
ca)
    dir=${2:?pki.sh ca DIR [NAME]}
    name=${3:-ca}
    mkdir -p "$dir"
    new_key "$dir/$name.key"
    openssl req -x509 -new -key "$dir/$name.key" -subj "/O=pix stream/CN=$name" -days "$DAYS" -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$dir/$name.crt" 2>/dev/null
    ;;
server)
    dir=${2:?pki.sh server DIR [CA]}
    sign "$dir" server "${3:-ca}" "$DAYS" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1${PKI_SERVER_NAMES:+,$PKI_SERVER_NAMES}" "/O=pix stream/CN=localhost"
    ;;
client)
    dir=${2:?pki.sh client DIR NAME [CA] [DAYS]}
    name=${3:?pki.sh client DIR NAME [CA] [DAYS]}
    [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "client name must be letters, digits, . _ -"
    sign "$dir" "$name" "${4:-ca}" "${5:-$DAYS}" \
        "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth" "/O=pix stream/CN=$name"
    ;;
credential | fingerprint)
    cert=${2:?pki.sh $cmd CERT}
    digest=$(openssl x509 -in "$cert" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
    [[ "$digest" =~ ^[0-9a-f]{64}$ ]] || die "cannot read the certificate $cert"
    if [[ $cmd == credential ]]; then echo "cert:$digest"; else echo "$digest"; fi
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    [[ "$cmd" == help || "$cmd" == --help ]] && exit 0
    exit 2
    ;;
esac
