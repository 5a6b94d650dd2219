#!/usr/bin/env bash
# Run the GPU tests and benchmarks on a GPU host that has no network access.
#
# The host's Python (3.12) is expected to have torch, numba-cuda (CuPy, onnxruntime) but no Triton, and numpy 2.
# Build .carry/ on a machine with network (bash perf/make_carry.sh), copy it to the GPU host beside this checkout,
# then, from the repository root there:
#   bash perf/run_device.sh [tests] [classifier] [bench] [served] [ensemble] [decode] [encoded] [envab] [analyzer] [scaling]
# (default: tests bench served ensemble; install-gpu-decode and install-dali unpack the
# bundles described below and stop). The script unpacks .carry/ (Python packages and the Triton pack) into /tmp/site
# (once per host), installs this project offline and editable into that Python, runs the stages and leaves logs and
# results in $OUT (default /tmp/pixelserve-out): gpu_tests.log, bench_kernels.json, results.tgz and the like.
#   tests       the GPU test files (TESTS="files and pytest options" overrides the list)
#   classifier  the torch classifier's GPU time per batch bucket, NHWC vs NCHW (perf/bench_classifier.py)
#   bench       the preprocessing kernels against the memory floor and torch / OpenCV (perf/bench_kernels.py)
#   served      preprocess against its peers, perf_analyzer over gRPC (RUNS, CONCURRENCY, SHM)
#   ensemble    profiles the product (image_classifier, torch classifier flavour) against the all-torch peer
#               and the Python-backend floor models (PROFILES)
#   decode      JPEG decode + preprocess (perf/bench_decode.py; DECODE_SIZES, DECODE_COLUMNS, DECODE_OPTIONS,
#               DECODE_PROCESSES, DECODE_THREADS, DECODE_BATCH pass its options, DECODE_TAG names the log and JSON)
#   encoded     serves image_classifier and image_classifier_encoded (torch flavour: decode, preprocess and classify
#               in one GPU step) and measures both on the same photos (raw pixels vs JPEG q90), keeping every
#               perf_analyzer CSV, then profiles where an encoded request's time goes (ENCODED_PROFILES, PEERS, MPS)
#   analyzer    Triton Model Analyzer searches on GPU 0 (needs .carry-ma/: perf/make_carry_model_analyzer.sh)
#   scaling     image_classifier on 1..N GPUs of the host (perf/scaling.py)
#   envab       the repository served twice in turns, the server's environment as shipped and changed
#               (perf/env_ab.py; ENV_AB_B, ENV_AB_POINTS, ENV_AB_ROUNDS; default: the malloc settings off)
# `decode` and `encoded` need nvImageCodec: carry .carry-gpu-decode/ (perf/make_carry_gpu_decode.sh) with the call
# (see below). The torch flavour needs
# model_repository/classifier/1/model.pt (python -m pixelserve.build.build_classifier --flavour torch writes it on
# a CPU host; perf/make_carry.sh packs it into .carry/ as model.pt.xz, unpacked below). .carry/ holds what the host's Python lacks: numpy 1.26.4 (numba-cuda and the Triton 2.51 stub need
# numpy<2), setuptools and tritonserver 2.51 + python backend + stub 3.12 + tritonclient + perf_analyzer
# (see perf/README.md).
set -uo pipefail
OUT="${OUT:-/tmp/pixelserve-out}"
mkdir -p "$OUT" /tmp/results
stages="${*:-tests bench served ensemble}"
# GPU JPEG decode (nvImageCodec + nvJPEG) is a bundle of its own, .carry-gpu-decode/ (perf/make_carry_gpu_decode.sh:
# one tar.xz of about 11 MB), which travels in the same call as .carry/ and is unpacked here, before any stage, into
# /tmp/site-gpu-decode (kept for later runs on the host). `install-gpu-decode` only unpacks it and stops.
if [ -f .carry-gpu-decode/gpu-decode-site.tar.xz ] && [ ! -d /tmp/site-gpu-decode/nvidia ]; then
  mkdir -p /tmp/site-gpu-decode && tar -xJf .carry-gpu-decode/gpu-decode-site.tar.xz -C /tmp/site-gpu-decode
fi
if [[ $stages == *install-gpu-decode* ]]; then
  ls /tmp/site-gpu-decode/nvidia && exit 0
  exit 1
fi
# NVIDIA DALI (the peer of bench_decode's dali@L columns and of perf/peer_models/dali_classifier_encoded), packed, is
# more than one call carries beside the tree: perf/make_carry_dali.sh splits it into pieces (.carry-dali/dali-part-*).
# Carry one piece per call (the last with dali.sha256 and deps/), each running `bash perf/run_device.sh install-dali`:
# each call keeps its piece in /tmp/dali-pieces, and the call that completes the checksum unpacks DALI and its
# dependencies into /tmp/site-dali (kept for later runs on the host).
if [[ $stages == *install-dali* ]]; then
  mkdir -p /tmp/dali-pieces
  cp -r .carry-dali/. /tmp/dali-pieces/
  if [ -f /tmp/dali-pieces/dali.sha256 ] && (cd /tmp/dali-pieces && cat dali-part-* > dali.tar.xz && sha256sum -c --quiet dali.sha256); then
    mkdir -p /tmp/site-dali && xz -d -T0 < /tmp/dali-pieces/dali.tar.xz | tar -x -C /tmp/site-dali
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site-dali /tmp/dali-pieces/deps/*.whl
    ls -d /tmp/site-dali/nvidia/dali && exit 0
    exit 1
  fi
  echo "DALI: $(ls /tmp/dali-pieces | grep -c '^dali-part-') piece(s) on this host, not yet complete: carry the next"
  exit 0
fi
if [ ! -d /tmp/site/pytriton ]; then
  mkdir -p /tmp/site
  # Nothing below can run without it: stop here rather than fail later in every stage.
  tar -xJf .carry/triton-2.51-site.tar.xz -C /tmp/site || { echo "!!! could not unpack .carry/ into /tmp/site"; exit 1; }
fi
export PYTHONPATH="/tmp/site:/tmp/site-gpu-decode" PATH="/tmp/site/bin:$PATH" NUMBA_CACHE_DIR=/tmp/numba-cache/kernels_numba PYTHONUNBUFFERED=1
# The servers below restrict model loading and shared-memory registration to this key (triton_local/access.py);
# set_instances and perf_analyzer (-H, through run_perf/profile_ensemble) read it from the environment.
export PIXELSERVE_ADMIN_KEY="${PIXELSERVE_ADMIN_KEY:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')}"
# The project as `pixelserve.*`, editable, offline: setuptools comes from the carried wheel in /tmp/site.
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e .
python3 -c "import numpy, numba, numba_cuda, torch; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__)"
python3 -c "import cupy; print('cupy', cupy.__version__)" || echo "cupy unusable here: the runner falls back to torch"
# nvImageCodec prints errors for the absent nvjpeg2k/nvtiff wheels on import (JPEG 2000 and TIFF: not served here).
if python3 -c "from nvidia import nvimgcodec; print('nvimgcodec', nvimgcodec.__version__)" 2>/tmp/nvimgcodec-import.log; then
  HAVE_NVIMGCODEC=1
else
  HAVE_NVIMGCODEC=0
  echo "!!! nvImageCodec NOT importable (from nvidia import nvimgcodec failed): GPU decode tests skip, and the decode"
  echo "!!! and encoded stages will not run. Carry .carry-gpu-decode/ (perf/make_carry_gpu_decode.sh). Import error:"
  tail -3 /tmp/nvimgcodec-import.log
fi
# NVIDIA DALI (bench_decode's dali@L columns, the served peer perf/peer_models/dali_classifier_encoded, its test),
# where it was unpacked into /tmp/site-dali: last on the path, so that its small dependencies never shadow the host's;
# its mixed decoder dlopens libnvimgcodec.so from the nvImageCodec wheel.
DALI_ENV=(env) && [ -d /tmp/site-dali/nvidia/dali ] && \
  DALI_ENV=(env PYTHONPATH="$PYTHONPATH:/tmp/site-dali" LD_LIBRARY_PATH="/tmp/site-gpu-decode/nvidia/nvimgcodec:${LD_LIBRARY_PATH:-}")
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,compute_mode --format=csv
# The servers run under MPS where the build asks for it (pixelserve-server follows the manifest); MPS=0 turns it off.
MPS_ARGS=() && [ "${MPS:-}" = 0 ] && MPS_ARGS=(--no-mps)

# A model folder that only an ignored __pycache__ keeps alive (its model was removed from git) fails Triton's load.
find model_repository -name __pycache__ -type d -prune -exec rm -rf {} +
find model_repository -mindepth 1 -type d -empty -delete
if [ ! -f model_repository/classifier/1/model.pt ] && [ -f .carry/model.pt.xz ]; then  # packed by make_carry.sh
  xz -dc .carry/model.pt.xz > model_repository/classifier/1/model.pt
fi
if [ -f model_repository/classifier/1/model.pt ]; then
  # The GPU host cannot fetch pretrained weights: serve the copied weights, and export the ONNX reference
  # (used by the tests and the CPU flavour) from the same weights.
  # The repository a user on this host gets: pixelserve-build, as the README says (PROFILE=latency for the other
  # profile). Every server below serves model_repository/ as built, and nothing else.
  python3 -m pixelserve.build.build_repository --target gpu-torch --weights model_repository/classifier/1/model.pt \
    ${PROFILE:+--profile "$PROFILE"} | tee /tmp/results/build.txt
  [ -f model_repository/classifier/1/model.onnx ] || python3 -m pixelserve.build.export_onnx \
    --weights model_repository/classifier/1/model.pt --output model_repository/classifier/1/model.onnx | tail -1
fi
# Profile steps against the running server (ports 8001/8002), separated by ';': name:model:points[@sizes]
# (points = mode:concurrency,...; sizes = HxW,... of the photos, default the six-size mix), or
# timeline:name:model:concurrency[@HxW] (perf/latency_timeline.py: each request's send time and latency), or
# set:model=count[,key=value...][,delay=us] to reload a model with another instance count, parameters and
# queue delay. Each model gets what it takes (JPEG files or raw pixels: profile_ensemble.input_encoding).
run_profiles() {
  local step spec model rest count params name points sizes
  IFS=';' read -ra steps <<< "$1"
  for step in "${steps[@]}"; do
    if [[ $step == set:* ]]; then
      spec="${step#set:}" model="${spec%%=*}" rest="${spec#*=}" count="${rest%%,*}" params=()
      [[ $rest == *,* ]] && for kv in $(tr , ' ' <<< "${rest#*,}"); do
        if [[ $kv == delay=* ]]; then params+=(--queue-delay-us "${kv#delay=}"); else params+=(--parameter "$kv"); fi
      done
      python3 -m pixelserve.perf.set_instances "$model" "$count" "${params[@]}"
      continue
    fi
    if [[ $step == timeline:* ]]; then  # timeline:name:model:concurrency[@HxW]: every request's latency and send time
      IFS=':' read -r _ name model points <<< "$step"
      python3 -m pixelserve.perf.latency_timeline --url 127.0.0.1:8001 --model "$model" --concurrency "${points%%@*}" \
        $([[ $points == *@* ]] && echo --size "${points#*@}") --seconds "${TIMELINE_SECONDS:-20}" \
        --period "${TIMELINE_PERIOD_S:-1}" --title "$name" --json "/tmp/results/$name.json"
      tar -czf "$OUT/results.tgz" -C /tmp/results .
      continue
    fi
    IFS=':' read -r name model points <<< "$step"
    sizes="" && [[ $points == *@* ]] && sizes="${points#*@}" points="${points%%@*}"
    python3 -m pixelserve.perf.profile_ensemble --interval "${INTERVAL_MS:-2000}" --output "/tmp/results/$name.md" \
      --model "$model" --points "$points" ${sizes:+--sizes "$sizes"} --title "$name" | grep -E ': [0-9]+/s p50|perf_analyzer exit'
    tar -czf "$OUT/results.tgz" -C /tmp/results .  # what is done so far survives a timeout
  done
}

if [[ $stages == *tests* ]]; then
  echo "=== GPU tests"
  "${DALI_ENV[@]}" python3 -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_kernels.py tests/test_antialias.py tests/test_gpu_serving.py tests/test_placement.py tests/test_torch_classifier.py tests/test_decode_headers.py tests/test_gpu_decoding.py tests/test_gpu_encoded_server.py tests/test_dali_peer.py} \
    --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log" | tail -25
fi
if [[ $stages == *classifier* ]]; then
  echo "=== torch classifier: GPU time per batch bucket, NHWC vs NCHW"
  python3 -m pixelserve.perf.bench_classifier 2>&1 | tee /tmp/results/bench_classifier.md | grep '^|'
fi
if [[ $stages == *bench* ]]; then
  echo "=== kernel benchmark"
  python3 -m pixelserve.perf.bench_kernels --json "$OUT/bench_kernels.json" 2>&1 | tee "$OUT/bench_kernels.log" | grep -v '^{'
fi
if [[ $stages == *served* ]]; then
  echo "=== served benchmark: preprocess vs peers, perf_analyzer over gRPC"
  # --no-supervise: no health probes (one inference a second) and no restarts while measuring (the response cache
  # is off by default: perf_analyzer 2.51 aborts on ensemble cache hits).
  python3 -m pixelserve.triton_local --no-supervise "${MPS_ARGS[@]}" --model-repository model_repository --model-repository perf/peer_models \
    --http-port 8000 --grpc-port 8001 --metrics-port 8002 -- --model-control-mode=explicit \
    --load-model=preprocess --load-model=preprocess_torch --load-model=preprocess_opencv > /tmp/results/server.log 2>&1 &
  for _ in $(seq 240); do curl -sf localhost:8000/v2/health/ready && break; sleep 0.5; done
  # RUNS: model:instances pairs; the shipped config's count is what `model:` alone measures.
  for run in ${RUNS:-preprocess: preprocess_torch: preprocess_opencv:}; do
    model="${run%%:*}" count="${run#*:}"
    [ -n "$count" ] && python3 -m pixelserve.perf.set_instances "$model" "$count"
    python3 -m pixelserve.perf.run_perf --config h100_preprocess --model "$model" --url 127.0.0.1:8001 \
      --measurement-interval "${INTERVAL_MS:-2000}" --concurrency "${CONCURRENCY:-1,8,16,32}" \
      --shared-memory "${SHM:-none,system,cuda}" --results-dir /tmp/results 2>&1 | grep -v "^perf_analyzer:" | tail -16
  done
  kill %1; wait
fi
if [[ $stages == *ensemble* ]]; then
  echo "=== ensemble profile: image_classifier vs the all-torch peer vs the floor models"
  # The repository as built for this host (pixelserve-build above), on the first GPU.
  CUDA_VISIBLE_DEVICES=0 python3 -m pixelserve.triton_local --no-supervise "${MPS_ARGS[@]}" --model-repository model_repository \
    --model-repository perf/peer_models --model-repository perf/floor_models --http-port 8000 --grpc-port 8001 --metrics-port 8002 -- \
    --model-control-mode=explicit --load-model=image_classifier --load-model=image_classifier_torch \
    --load-model=noop_big --load-model=noop_gpu > /tmp/results/server.log 2>&1 &
  for _ in $(seq 480); do curl -sf localhost:8000/v2/health/ready && break; sleep 0.5; done
  run_profiles "${PROFILES:-ours:image_classifier:system:1,cuda:1,system:64,cuda:64;peer:image_classifier_torch:system:64,cuda:64;floor-big:noop_big:system:1,system:16;floor-gpu:noop_gpu:cuda:1,cuda:64}"
  curl -s localhost:8002/metrics | grep -E "^nv_gpu_memory_used|^pixelserve" > /tmp/results/metrics-end.txt
  cp /tmp/pixelserve-triton-*/tritonserver.log /tmp/results/ 2>/dev/null
  kill %1; wait
fi
if [[ $stages == *analyzer* ]]; then
  echo "=== Model Analyzer: preprocess and the torch classifier (brute), then the ensemble image_classifier (quick)"
  # Model Analyzer comes from .carry-ma/ (bash perf/make_carry_model_analyzer.sh), a bundle separate from .carry/:
  # it may be copied to the host after an earlier run unpacked .carry/ (/tmp/site is kept between runs).
  if [ ! -d /tmp/ma-site/model_analyzer ] && compgen -G ".carry-ma/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ma-site .carry-ma/*.whl
  fi
  if [ ! -d /tmp/ma-site/model_analyzer ]; then
    echo "Model Analyzer is not installed and .carry-ma/ was not carried (bash perf/make_carry_model_analyzer.sh): skipped"
  else
    # Model Analyzer's packages after /tmp/site, so that it drives the carried tritonclient with numpy 1.26.
    printf '#!/bin/sh\nPYTHONPATH="$PYTHONPATH:/tmp/ma-site" exec python3 -m model_analyzer.entrypoint "$@"\n' > /tmp/model-analyzer
    chmod +x /tmp/model-analyzer
    [ -n "${MA_RESUME:-}" ] || rm -rf /tmp/ma-work  # MA_RESUME=1 goes on from the checkpoints of an earlier run
    # SIGINT at the limit: Model Analyzer ends its current measurement and keeps a checkpoint (no reports then).
    MODEL_ANALYZER=/tmp/model-analyzer CUDA_VISIBLE_DEVICES=0 timeout -k 60 -s INT "${MA_LIMIT_S:-360}" \
      python3 -m pixelserve.perf.model_analyzer --workdir /tmp/ma-work \
      ${MA_CONFIGS:---config perf/model_analyzer_gpu.yaml --config perf/model_analyzer_gpu_ensemble.yaml} \
      > "$OUT/model_analyzer.log" 2>&1
    echo "model_analyzer exit $?"; grep -E "Profiling|Profile complete|rror" "$OUT/model_analyzer.log" | tail -40
    # Reports, metrics tables, checkpoints and the configurations tried (config.pbtxt only, no model files).
    (cd /tmp/ma-work && find . \( -path '*/results/*' -o -path '*/checkpoints/*' -o -name 'tritonserver.log' \
      -o -path '*/output_repository/*/config.pbtxt' \) -type f -print0 | tar -czf "$OUT/model_analyzer.tgz" --null -T -)
  fi
fi
if [[ $stages == *scaling* ]]; then
  echo "=== scaling: image_classifier on 1..N GPUs of this machine"
  python3 -m pixelserve.perf.scaling --max-gpus "$(nvidia-smi -L | wc -l)" --model image_classifier \
    ${PER_GPU:+--per-gpu "$PER_GPU"} --concurrency-per-gpu "${CONCURRENCY_PER_GPU:-64,128}" \
    --measurement-interval "${INTERVAL_MS:-2000}" --results-dir /tmp/results 2>&1 | grep -v "^perf_analyzer:" | tail -20
fi
if [[ " $stages " == *" decode "* ]]; then  # the word, not install-gpu-decode
  echo "=== decode benchmark: JPEG q90 -> 3x224x224, nvImageCodec + ours vs CPU threads + ours vs torchvision"
  if [ "$HAVE_NVIMGCODEC" = 1 ]; then
    "${DALI_ENV[@]}" python3 -m pixelserve.perf.bench_decode --batch "${DECODE_BATCH:-64}" --options "${DECODE_OPTIONS:-}" \
      ${DECODE_COLUMNS:+--columns "$DECODE_COLUMNS"} ${DECODE_SIZES:+--sizes "$DECODE_SIZES"} \
      ${DECODE_PROCESSES:+--processes "$DECODE_PROCESSES"} ${DECODE_THREADS:+--threads "$DECODE_THREADS"} \
      --json "$OUT/bench_decode${DECODE_TAG:+-$DECODE_TAG}.json" 2>&1 \
      | grep -v "nvjpeg2k\|nvtiff\|nvJPEG2000\|nvTIFF" | tee "$OUT/bench_decode${DECODE_TAG:+-$DECODE_TAG}.log" | grep -v '^{'
  else
    echo "decode stage skipped: nvImageCodec is not importable (see above)"
  fi
fi
if [[ " $stages " == *" envab "* ]]; then
  echo "=== env_ab: the repository as built, served with the server's environment as shipped (A) and changed (B), in turns"
  # ENV_AB_B: B's NAME=VALUE words (default: glibc's own malloc settings); ENV_AB_POINTS: model:mode:concurrency words.
  ab_args=() && for b in ${ENV_AB_B:-PIXELSERVE_MALLOC_TUNING=0}; do ab_args+=(--b "$b"); done
  for point in ${ENV_AB_POINTS:-image_classifier_encoded:none:256 image_classifier:system:128}; do ab_args+=(--point "$point"); done
  CUDA_VISIBLE_DEVICES=0 python3 -m pixelserve.perf.env_ab "${ab_args[@]}" "${MPS_ARGS[@]}" --rounds "${ENV_AB_ROUNDS:-1}" \
    --interval "${INTERVAL_MS:-2500}" --output "/tmp/results/${RESULTS_TAG:-envab}/env-ab.md" 2>&1 | grep -v "^perf_analyzer:"
  tar -czf "$OUT/results.tgz" -C /tmp/results .
fi
if [[ $stages == *encoded* ]]; then
  echo "=== encoded vs raw ensemble: the same photos as JPEG q90 (decode on the GPU) and as pixels, gRPC, no shared memory"
  # RAW_ONLY=1 serves without nvImageCodec (the encoded model then decodes with PIL, as built for such a host): for
  # raw-pixel configs and profiles on a host, or in a call, without .carry-gpu-decode/.
  if [ "$HAVE_NVIMGCODEC" = 1 ] || [ "${RAW_ONLY:-}" = 1 ]; then
    # The repository as built for this host (pixelserve-build above); results go to /tmp/results/$RESULTS_TAG.
    # PEERS (e.g. "twostep_classifier_encoded dali_classifier_encoded"): benchmark peers of perf/peer_models/ served
    # beside the ensembles (the DALI one needs DALI in /tmp/site-dali).
    # FLOORS (model:shm[:instances], e.g. "noop_big:system:8 noop_gpu:cuda:8", "noop_files:none:8" for the configs of
    # files): floor models of perf/floor_models/ served beside them and measured with each config's inputs over that
    # shared memory, in the same run.
    PEER_ARGS=() && for peer in ${PEERS:-} ${FLOORS:-}; do PEER_ARGS+=(--load-model="${peer%%:*}"); done
    CUDA_VISIBLE_DEVICES=0 "${DALI_ENV[@]}" python3 -m pixelserve.triton_local --no-supervise "${MPS_ARGS[@]}" \
      --model-repository model_repository ${PEERS:+--model-repository perf/peer_models} \
      ${FLOORS:+--model-repository perf/floor_models} --http-port 8000 --grpc-port 8001 \
      --metrics-port 8002 -- --model-control-mode=explicit \
      --load-model=image_classifier --load-model=image_classifier_encoded "${PEER_ARGS[@]}" \
      > /tmp/results/server-encoded.log 2>&1 &
    for _ in $(seq 480); do curl -sf localhost:8000/v2/health/ready && break; sleep 0.5; done
    curl -s localhost:8000/v2/models/preprocess/config | python3 -c "import json, sys; c = json.load(sys.stdin); print('preprocess instances:', c.get('instance_group'))"
    dir="/tmp/results/${RESULTS_TAG:-encoded}" && mkdir -p "$dir"
    if grep -q "^MPS daemon: " /tmp/results/server-encoded.log; then  # the clients the MPS server holds: one per CUDA context
      export CUDA_MPS_PIPE_DIRECTORY="$(sed -n 's/^MPS daemon: //p' /tmp/results/server-encoded.log)"
      for pid in $(echo get_server_list | nvidia-cuda-mps-control); do
        echo "MPS server $pid, clients: $(echo "get_client_list $pid" | nvidia-cuda-mps-control | wc -l)"
      done
    fi
    # ENCODED_CONFIGS="" skips these runs; CONCURRENCY and SHM (e.g. system,cuda) override the configs' own levels.
    # The DALI peer serves as many instances as the product's preprocess (build/placement.yaml sets that count).
    [[ " ${PEERS:-} " == *" dali_classifier_encoded "* ]] && python3 -m pixelserve.perf.set_instances preprocess_dali --like preprocess
    declare -A floor_input=()  # each floor's kind of input (jpeg: files, b64: pixels), asked once
    for floor in ${FLOORS:-}; do  # model:shm[:instances]
      IFS=':' read -r floor_model _ floor_count <<< "$floor"
      [ -n "$floor_count" ] && python3 -m pixelserve.perf.set_instances "$floor_model" "$floor_count"
      floor_input[$floor_model]="$(python3 -c "from pixelserve.perf.profile_ensemble import input_encoding as e; print(e('$floor_model'))")"
    done
    for config in ${ENCODED_CONFIGS-h100_decode_raw h100_decode_encoded h100_decode_encoded_1080p}; do
      python3 -m pixelserve.perf.run_perf --config "$config" --url 127.0.0.1:8001 --measurement-interval "${INTERVAL_MS:-5000}" \
        ${CONCURRENCY:+--concurrency "$CONCURRENCY"} ${SHM:+--shared-memory "$SHM"} --results-dir "$dir" 2>&1 | grep -v "^perf_analyzer:" | tail -8
      config_files=no && grep -qE '^ +encoding: jpeg' "perf/configs/$config.yaml" && config_files=yes
      for floor in ${FLOORS:-}; do  # each floor with the configs of its kind of input: files or pixels
        IFS=':' read -r floor_model floor_shm _ <<< "$floor"
        floor_files=no && [ "${floor_input[$floor_model]}" = jpeg ] && floor_files=yes
        [[ $floor_files == "$config_files" ]] || continue
        python3 -m pixelserve.perf.run_perf --config "$config" --model "$floor_model" --shared-memory "$floor_shm" \
          --url 127.0.0.1:8001 --measurement-interval "${INTERVAL_MS:-5000}" ${CONCURRENCY:+--concurrency "$CONCURRENCY"} \
          --results-dir "$dir" 2>&1 | grep -v "^perf_analyzer:" | tail -5
      done
    done
    # ENCODED_PROFILES: run_profiles steps (e.g. set:preprocess=4,decode_threads=1;p4:image_classifier_encoded:none:32,none:128)
    run_profiles "${ENCODED_PROFILES:-${RESULTS_TAG:-encoded}/profile:image_classifier_encoded:none:1,none:64}"
    grep -E "preprocess: |error|Error" /tmp/pixelserve-triton-*/tritonserver.log 2>/dev/null | tail -20 > "$dir"/server-excerpt.log
    grep -h "slow execute" /tmp/pixelserve-triton-*/tritonserver.log > "$dir"/slow-log.txt 2>/dev/null
    curl -s localhost:8002/metrics | grep -E "^pixelserve|^nv_gpu_memory_used" > "$dir"/metrics-end.txt
    [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && cp "$(dirname "$CUDA_MPS_PIPE_DIRECTORY")"/log/control.log "$dir"/mps-control.log
    kill %1; wait  # the launcher stops the server, then its MPS daemon
  else
    echo "encoded stage skipped: nvImageCodec is not importable (see above)"
  fi
fi
tar -czf "$OUT/results.tgz" -C /tmp/results .
