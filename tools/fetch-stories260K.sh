#!/bin/sh
# Puts stories260K.bin and tok512.bin (Karpathy's tinyllamas, MIT) into DEST
# (default: models/). Copies them from ${SLM_MODELS:-../shared/models}/stories260K/
# when they are there, otherwise downloads them from Hugging Face with curl or
# wget. Either way the sha256 of each file is checked.
set -eu

DEST=${1:-models}
SRC_DIR=${SLM_MODELS:-../shared/models}/stories260K
URL=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K

die() { echo "fetch-stories260K: $*" >&2; exit 1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
    elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 "$1" | sed 's/.*= *//'
    else die "no sha256sum, shasum or openssl to check the download with"
    fi
}

download() { # url file
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 2 --connect-timeout 20 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        echo "fetch-stories260K: neither curl nor wget is installed" >&2; return 1
    fi
}

mkdir -p "$DEST"
for entry in \
    stories260K.bin:b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696 \
    tok512.bin:037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312
do
    name=${entry%%:*}
    sum=${entry#*:}
    out=$DEST/$name
    if [ -f "$out" ] && [ "$(sha256_of "$out")" = "$sum" ]; then
        continue
    fi
    if [ -f "$SRC_DIR/$name" ] && [ "$(sha256_of "$SRC_DIR/$name")" = "$sum" ]; then
        echo "fetch-stories260K: copying $SRC_DIR/$name"
        cp "$SRC_DIR/$name" "$out.part"
    else
        echo "fetch-stories260K: downloading $URL/$name"
        if ! download "$URL/$name" "$out.part"; then
            rm -f "$out.part"
            die "could not download $URL/$name (offline?). Put $name in $DEST/ or set SLM_MODELS to a folder with stories260K/$name."
        fi
    fi
    got=$(sha256_of "$out.part")
    if [ "$got" != "$sum" ]; then
        rm -f "$out.part"
        die "$name: sha256 mismatch (expected $sum, got $got)"
    fi
    mv "$out.part" "$out"
done
echo "fetch-stories260K: $DEST/stories260K.bin and $DEST/tok512.bin are ready"
