#!/usr/bin/env bash
# Prepare LibriSpeech train-clean-100 and the CPC paper's splits and phone labels, in stages.
#
#   stage 1: download train-clean-100.tar.gz (resumable) and verify its md5
#   stage 2: extract it to $DATA_DIR/LibriSpeech/train-clean-100
#   stage 3: download train_split.txt, test_split.txt and converted_aligned_phones.zip (the CPC
#            paper's split and 41-class frame labels), unzip the labels, verify/record sha256
#   stage 4: write a Kaldi-style data dir ($DATA_DIR/kaldi/train-clean-100: wav.scp, utt2spk,
#            spk2utt) with paths relative to that dir
#
# Usage: recipes/librispeech/prepare.sh [--stage N] [--stop-stage M] [--data-dir DIR]
# Every stage is idempotent: a finished stage is skipped on the next run (no download twice).
# Every URL and the expected md5 can be overridden from the environment (see README.md).

set -euo pipefail

stage=1
stop_stage=4
data_dir="${DATA_DIR:-data}"

# ----- sources (override with environment variables) -----
LIBRISPEECH_URL="${LIBRISPEECH_URL:-https://www.openslr.org/resources/12/train-clean-100.tar.gz}"
LIBRISPEECH_MD5="${LIBRISPEECH_MD5:-2a93770f6d5c6c964bc51631d519d68e}"
# The CPC authors publish the split and the labels in a Google Drive folder, which curl cannot
# list. s3prl keeps a copy in its repository (phone_linear downstream), pinned here to one commit;
# the Drive file ids below are the ones Greedy InfoMax's download_data.sh uses, tried second.
CPC_LABELS_DRIVE_FOLDER="https://drive.google.com/drive/folders/1BhJ2umKH3whguxMwifaKtSra0TgAbtfb"
S3PRL_COMMIT="71a4cd575cbe2c6f4be656a92c6f6665d699b108"
default_labels_base="https://raw.githubusercontent.com/s3prl/s3prl/${S3PRL_COMMIT}/s3prl/downstream/phone_linear/data"
if [[ -n "${CPC_LABELS_BASE_URL:-}" ]]; then
  labels_base="${CPC_LABELS_BASE_URL%/}"
  gdrive_fallback="${CPC_LABELS_GDRIVE_FALLBACK:-0}"  # an explicit mirror is used alone
else
  labels_base="$default_labels_base"
  gdrive_fallback="${CPC_LABELS_GDRIVE_FALLBACK:-1}"
fi
gdrive_id() {  # a case, not an associative array, so macOS's bash 3.2 runs this script too
  case "$1" in
    train_split.txt) echo "1ubREoLQu47_ZDn39YWv1wvVPe2ZlIZAb" ;;
    test_split.txt) echo "1vSHmncPsRY7VWWAd_BtoWs9-fQ5cBrEB" ;;
    converted_aligned_phones.zip) echo "1bLuDkapGBERG_VYPS7fNZl5GXsQ9z3p2" ;;
  esac
}

# ----- download behaviour -----
DOWNLOAD_RETRIES="${DOWNLOAD_RETRIES:-5}"            # attempts per file, each resuming the last
DOWNLOAD_RETRY_WAIT="${DOWNLOAD_RETRY_WAIT:-10}"     # seconds between attempts
DOWNLOAD_CONNECT_TIMEOUT="${DOWNLOAD_CONNECT_TIMEOUT:-30}"
DOWNLOAD_STALL_SECONDS="${DOWNLOAD_STALL_SECONDS:-120}"  # abort an attempt below 1 KB/s this long

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

log() { echo "$(date '+%F %T') [prepare.sh] $*"; }
die() {
  echo "$(date '+%F %T') [prepare.sh] ERROR: $*" >&2
  exit 1
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --stage) stage="${2:?--stage needs a number}"; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage="${2:?--stop-stage needs a number}"; shift 2 ;;
    --data-dir|--data_dir) data_dir="${2:?--data-dir needs a path}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[[ "$stage" =~ ^[0-9]+$ ]] || die "--stage: expected a number 1-4, found '$stage'"
[[ "$stop_stage" =~ ^[0-9]+$ ]] || die "--stop-stage: expected a number 1-4, found '$stop_stage'"
# A stage outside 1-4, or a stop before the start, used to print "done" having done nothing.
((stage >= 1 && stage <= 4)) || die "--stage: expected a number 1-4, found $stage"
((stop_stage >= 1 && stop_stage <= 4)) || die "--stop-stage: expected a number 1-4, found $stop_stage"
((stage <= stop_stage)) || die "--stage $stage is after --stop-stage $stop_stage; nothing to do"
check_count() {  # NAME VALUE MIN: a whole number >= MIN, or die naming the variable
  [[ "$2" =~ ^[0-9]+$ ]] && (($2 >= $3)) || die "$1: expected a whole number >= $3, found '$2'"
}
check_count DOWNLOAD_RETRIES "$DOWNLOAD_RETRIES" 1
check_count DOWNLOAD_RETRY_WAIT "$DOWNLOAD_RETRY_WAIT" 0
check_count DOWNLOAD_CONNECT_TIMEOUT "$DOWNLOAD_CONNECT_TIMEOUT" 1
check_count DOWNLOAD_STALL_SECONDS "$DOWNLOAD_STALL_SECONDS" 1

mkdir -p "$data_dir" 2>/dev/null && [[ -w "$data_dir" ]] \
  || die "--data-dir: cannot create or write the folder '$data_dir'"
data_dir="$(cd "$data_dir" && pwd)"
download_dir="$data_dir/downloads"
libri_root="$data_dir/LibriSpeech"
labels_dir="$data_dir/LibriSpeech100_labels_split"
kaldi_dir="$data_dir/kaldi/train-clean-100"
archive="$download_dir/train-clean-100.tar.gz"
extracted_marker="$libri_root/.train-clean-100.extracted"

md5_of() {
  if command -v md5sum >/dev/null; then md5sum "$1" | cut -d' ' -f1; else md5 -q "$1"; fi
}
sha256_of() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# fetch URL PART: download URL into PART, resuming what PART already holds. PART.url remembers
# where the bytes came from, so a different URL never continues another source's bytes.
fetch() {
  local url="$1" part="$2" attempt rc
  if [[ -f "$part" && "$(cat "$part.url" 2>/dev/null || true)" != "$url" ]]; then
    rm -f "$part"
  fi
  echo "$url" >"$part.url"
  for ((attempt = 1; attempt <= DOWNLOAD_RETRIES; attempt++)); do
    if [[ -s "$part" ]]; then
      log "resuming $(basename "$part") at $(wc -c <"$part") bytes (attempt $attempt/$DOWNLOAD_RETRIES)"
    else
      log "downloading $url (attempt $attempt/$DOWNLOAD_RETRIES)"
    fi
    rc=0
    if command -v curl >/dev/null; then
      local progress=(--silent --show-error) code
      [[ -t 2 ]] && progress=(--progress-bar)
      code="$(curl --fail --location "${progress[@]}" --continue-at - \
        --connect-timeout "$DOWNLOAD_CONNECT_TIMEOUT" \
        --speed-limit 1024 --speed-time "$DOWNLOAD_STALL_SECONDS" \
        --write-out '%{http_code}' --output "$part" "$url")" || rc=$?
      if [[ $rc -eq 33 || "$code" == "416" ]]; then
        # The server ignores Range (33), or PART is already as long as the file (416) yet was
        # not accepted by its caller: these bytes cannot be continued, so start over.
        log "cannot resume $(basename "$part") (curl exit $rc, HTTP $code); restarting from byte 0"
        rm -f "$part"
        continue
      fi
    else
      local wget_progress=()
      [[ -t 2 ]] && wget_progress=(--show-progress)
      wget --continue --quiet "${wget_progress[@]}" --timeout="$DOWNLOAD_CONNECT_TIMEOUT" \
        --tries=1 --output-document="$part" "$url" || rc=$?
    fi
    if [[ $rc -eq 0 ]]; then
      return 0
    fi
    log "download of $url stopped (exit status $rc)"
    if ((attempt < DOWNLOAD_RETRIES)); then sleep "$DOWNLOAD_RETRY_WAIT"; fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  log "stage 1: download train-clean-100 ($LIBRISPEECH_URL)"
  mkdir -p "$download_dir"
  if [[ -f "$archive" && "$(cat "$archive.done" 2>/dev/null || true)" == "$LIBRISPEECH_MD5" ]]; then
    log "stage 1: $archive already verified (md5 $LIBRISPEECH_MD5); skipping"
  elif [[ ! -f "$archive" && "$(cat "$extracted_marker" 2>/dev/null || true)" == "$LIBRISPEECH_MD5" ]]; then
    log "stage 1: already extracted from a verified archive ($extracted_marker); skipping"
  else
    if [[ -f "$archive" ]]; then  # e.g. copied in by hand: verify it, never overwrite it
      found="$(md5_of "$archive")"
      [[ "$found" == "$LIBRISPEECH_MD5" ]] || die "$archive: expected md5 $LIBRISPEECH_MD5, \
found $found. Delete it and run again to download it afresh."
    else
      part="$archive.part"
      fetch_ok=1
      if [[ -s "$part" && "$(cat "$part.url" 2>/dev/null || true)" == "$LIBRISPEECH_URL" \
            && "$(md5_of "$part")" == "$LIBRISPEECH_MD5" ]]; then
        log "stage 1: $part is already complete"  # killed between download and rename
      else
        fetch "$LIBRISPEECH_URL" "$part" || fetch_ok=0
      fi
      if [[ $fetch_ok -eq 0 && ! -s "$part" ]]; then
        die "could not download $LIBRISPEECH_URL after $DOWNLOAD_RETRIES attempts; run again to retry"
      fi
      found="$(md5_of "$part")"
      if [[ "$found" != "$LIBRISPEECH_MD5" ]]; then
        if [[ $fetch_ok -eq 0 ]]; then
          die "download of $LIBRISPEECH_URL incomplete after $DOWNLOAD_RETRIES attempts \
($(wc -c <"$part") bytes kept in $part); run again to resume"
        fi
        rm -f "$part" "$part.url"
        die "checksum mismatch for $LIBRISPEECH_URL: expected md5 $LIBRISPEECH_MD5, found $found. \
The download was deleted (nothing was kept that looks complete); run again to retry, or set \
LIBRISPEECH_MD5 if you deliberately use another archive."
      fi
      mv "$part" "$archive"
      rm -f "$part.url"
    fi
    echo "$LIBRISPEECH_MD5" >"$archive.done"
    log "stage 1: $archive verified (md5 $LIBRISPEECH_MD5)"
  fi
fi

# ---------------------------------------------------------------------------------------------
if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  log "stage 2: extract train-clean-100"
  if [[ "$(cat "$extracted_marker" 2>/dev/null || true)" == "$LIBRISPEECH_MD5" \
        && -d "$libri_root/train-clean-100" ]]; then
    log "stage 2: $libri_root/train-clean-100 already extracted; skipping"
  else
    [[ -f "$archive" && "$(cat "$archive.done" 2>/dev/null || true)" == "$LIBRISPEECH_MD5" ]] \
      || die "stage 2 needs the verified archive $archive; run stage 1 first"
    # An interrupted extraction leaves no marker, so the next run extracts everything again.
    tar -xzf "$archive" -C "$data_dir"
    [[ -d "$libri_root/train-clean-100" ]] || die "$archive: expected LibriSpeech/train-clean-100 \
inside, found $(tar -tzf "$archive" | head -n 3 | tr '\n' ' ')"
    echo "$LIBRISPEECH_MD5" >"$extracted_marker"
    num_flac="$(find "$libri_root/train-clean-100" -name '*.flac' | wc -l | tr -d ' ')"
    log "stage 2: extracted $num_flac flac files to $libri_root/train-clean-100"
  fi
fi

# ---------------------------------------------------------------------------------------------
checksums="$labels_dir/checksums.sha256"

recorded_sha() {  # recorded_sha NAME -> the sha256 recorded on first download, or nothing
  [[ -f "$checksums" ]] || return 0
  awk -v name="$1" '$2 == name { print $1 }' "$checksums" | tail -n 1
}

record_sha() {  # record_sha NAME SHA: append (first download); never rewrite an existing entry
  echo "$2  $1" >>"$checksums"
}

verify_or_record() {  # verify_or_record NAME: trust on first use, verify on every later run
  local name="$1" expected found
  found="$(sha256_of "$labels_dir/$name")"
  expected="$(recorded_sha "$name")"
  if [[ -z "$expected" ]]; then
    record_sha "$name" "$found"
    log "stage 3: recorded sha256 of $name in $checksums ($found)"
  elif [[ "$found" != "$expected" ]]; then
    die "$labels_dir/$name: expected sha256 $expected (recorded in $checksums on first \
download), found $found. Delete the file to download it again, or delete its line in \
$checksums if the change is intended."
  fi
}

valid_split() {  # one LibriSpeech utterance id per line, e.g. 19-198-0001
  [[ -s "$1" ]] && ! grep -Evq '^[0-9]+-[0-9]+-[0-9]+[[:space:]]*$' "$1"
}

valid_zip() {
  if command -v unzip >/dev/null; then
    # No `unzip | grep -q`: with pipefail, grep's early exit can fail the pipe through SIGPIPE.
    local names
    names="$(unzip -Z1 "$1" 2>/dev/null)" || return 1
    grep -qx 'converted_aligned_phones.txt' <<<"$names"
  else
    python3 - "$1" <<'EOF' 2>/dev/null
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(n.endswith("converted_aligned_phones.txt") for n in names) else 1)
EOF
  fi
}

valid_download() {  # valid_download NAME PATH
  case "$1" in
    *.zip) valid_zip "$2" ;;
    *) valid_split "$2" ;;
  esac
}

manual_instructions() {
  cat >&2 <<EOF
To fetch it by hand: open $CPC_LABELS_DRIVE_FOLDER
(the CPC authors' folder), download $1 and put it at
  $labels_dir/$1
then run: $0 --stage 3 --data-dir $data_dir
Or serve the three files (train_split.txt, test_split.txt, converted_aligned_phones.zip) from a
mirror and set CPC_LABELS_BASE_URL to the folder URL that holds them.
EOF
}

get_label_file() {  # get_label_file NAME: download once, validate, verify or record sha256
  local name="$1" dest="$labels_dir/$1" url
  if [[ -f "$dest" ]]; then
    verify_or_record "$name"
    log "stage 3: $name already present and verified; skipping download"
    return 0
  fi
  local urls=("$labels_base/$name")
  if [[ "$gdrive_fallback" == "1" ]]; then
    urls+=("https://drive.usercontent.google.com/download?id=$(gdrive_id "$name")&export=download&confirm=t")
  fi
  for url in "${urls[@]}"; do
    if ! fetch "$url" "$dest.part"; then
      log "stage 3: $url failed; trying the next source"
      continue
    fi
    if ! valid_download "$name" "$dest.part"; then
      # Google Drive answers with an HTML page when it refuses (quota, consent): not our file.
      log "stage 3: $url did not return a valid $name (an error page?); trying the next source"
      rm -f "$dest.part" "$dest.part.url"
      continue
    fi
    local expected found
    expected="$(recorded_sha "$name")"
    found="$(sha256_of "$dest.part")"
    if [[ -n "$expected" && "$found" != "$expected" ]]; then
      rm -f "$dest.part" "$dest.part.url"
      die "$url: expected sha256 $expected (recorded in $checksums), found $found; the download \
was deleted"
    fi
    mv "$dest.part" "$dest"
    rm -f "$dest.part.url"
    verify_or_record "$name"
    log "stage 3: $name downloaded from $url"
    return 0
  done
  echo "[prepare.sh] ERROR: could not download $name from any source:" >&2
  printf '  %s\n' "${urls[@]}" >&2
  manual_instructions "$name"
  exit 1
}

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  log "stage 3: CPC paper split and phone labels -> $labels_dir"
  mkdir -p "$labels_dir"
  for name in train_split.txt test_split.txt converted_aligned_phones.zip; do
    get_label_file "$name"
  done
  phones="$labels_dir/converted_aligned_phones.txt"
  if [[ -f "$phones" && -n "$(recorded_sha converted_aligned_phones.txt)" ]]; then
    verify_or_record converted_aligned_phones.txt
    log "stage 3: $phones already unzipped and verified; skipping"
  else
    tmp="$phones.tmp"
    if command -v unzip >/dev/null; then
      unzip -p "$labels_dir/converted_aligned_phones.zip" converted_aligned_phones.txt >"$tmp"
    else
      python3 - "$labels_dir/converted_aligned_phones.zip" "$tmp" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("converted_aligned_phones.txt") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    fi
    first_line="$(head -n 1 "$tmp")"
    if ! grep -Eq '^[0-9]+-[0-9]+-[0-9]+( [0-9]+)+[[:space:]]*$' <<<"$first_line"; then
      rm -f "$tmp"
      die "$labels_dir/converted_aligned_phones.zip: expected lines 'UTT_ID LABEL LABEL ...' in \
converted_aligned_phones.txt, found something else"
    fi
    mv "$tmp" "$phones"
    verify_or_record converted_aligned_phones.txt
    log "stage 3: unzipped $(wc -l <"$phones" | tr -d ' ') utterances of frame labels to $phones"
  fi
fi

# ---------------------------------------------------------------------------------------------
if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  log "stage 4: Kaldi-style data dir $kaldi_dir"
  [[ -d "$libri_root/train-clean-100" ]] || die "stage 4 needs $libri_root/train-clean-100; run \
stages 1-2 first"
  mkdir -p "$kaldi_dir"
  # Paths are relative to the Kaldi dir (cpcspeech resolves them against it), so the data
  # folder can be moved as a whole.
  (cd "$kaldi_dir" && find ../../LibriSpeech/train-clean-100 -name '*.flac') \
    | awk '{ n = split($0, p, "/"); utt = p[n]; sub(/\.flac$/, "", utt); print utt, $0 }' \
    | LC_ALL=C sort -k1,1 >"$kaldi_dir/wav.scp.tmp"
  [[ -s "$kaldi_dir/wav.scp.tmp" ]] || die "no .flac files under $libri_root/train-clean-100"
  awk '{ split($1, p, "-"); print $1, p[1] }' "$kaldi_dir/wav.scp.tmp" >"$kaldi_dir/utt2spk.tmp"
  awk '{ u[$2] = u[$2] " " $1 } END { for (s in u) print s u[s] }' "$kaldi_dir/utt2spk.tmp" \
    | LC_ALL=C sort -k1,1 >"$kaldi_dir/spk2utt.tmp"
  for f in wav.scp utt2spk spk2utt; do mv "$kaldi_dir/$f.tmp" "$kaldi_dir/$f"; done
  log "stage 4: $(wc -l <"$kaldi_dir/wav.scp" | tr -d ' ') utterances of \
$(wc -l <"$kaldi_dir/spk2utt" | tr -d ' ') speakers in $kaldi_dir"
fi

log "done (stages $stage-$stop_stage, data in $data_dir)"
