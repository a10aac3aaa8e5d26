#!/usr/bin/env bash
# The Wan fine-tuning path end to end, offline, at tiny size (docs/training.md, "The whole Wan path on a tiny
# random Wan"): build a tiny random Wan directory, pack 12 captioned clips into latent + text shards, fine-tune
# a LoRA with validation on a held-out shard, export the adapter in diffusers' and ComfyUI's layouts, apply each
# back through backbone.lora and sample, once more in bf16.
#
#   bash examples/wan_tiny_walkthrough.sh OUT_DIR      # OUT_DIR must not exist yet, or be empty
#
# FVDM (default `fvdm`) and PYTHON (default `python`) name the commands to run. Everything is random weights: the
# samples are noise-like; the point is that every step runs and the files fit together.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
OUT=$1
FVDM=${FVDM:-fvdm}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -n "$(ls -A "$OUT")" ]; then
    echo "$0: $OUT is not empty; give a new directory (nothing was written)" >&2
    exit 2
fi
WAN=$OUT/wan

# 1. A tiny random Wan directory: transformer/ (size tiny, 16 latent channels), vae/, text_encoder/, tokenizer/.
$FVDM data make-tiny-wan "$WAN"

# 2. Twelve 17-frame 32x32 clips with sidecar captions (clip.mp4 + clip.txt), the layout `fvdm data pack` reads.
#    Any folder of videos works; these come from fvdm's synthetic test clips (a moving square).
$PYTHON - "$OUT/clips" <<'EOF'
import sys
from fvdm.plugins.datasets.fixtures import write_video_folder

for path in write_video_folder(sys.argv[1], {"squares": 12}, frames=17, size=32):
    path.with_suffix(".txt").write_text(f"a bright square moving over a gradient ({path.stem})\n")
EOF

# 3. Pack them as float16 latents + caption embeddings (default --encode-batch 4: 12 clips = three full batches).
#    --shard-size 32KB only makes several shards of these tiny clips, so one can be held out for validation.
$FVDM data pack "$OUT/clips" "$OUT/shards" --frames 17 --shard-size 32KB \
    --autoencoder "wan_vae:$WAN" --text-encoder "umt5:$WAN" --no-progress
$FVDM data inspect "$OUT/shards" --no-verify

# 4. LoRA fine-tune with PTSS on shards 0-1, validating every 10 steps on the held-out shard 2.
cat > "$OUT/lora.yaml" <<EOF
name: wan-tiny-lora
run_root: $OUT/runs
data: {name: webdataset, urls: "$OUT/shards/shard-{000000..000001}.tar", num_frames: 17}
validation: {name: webdataset, urls: "$OUT/shards/shard-000002.tar", num_frames: 17, shuffle_shards: false}
backbone: {name: wan, size: tiny, pretrained: $WAN}
autoencoder: {name: wan_vae, path: $WAN}
text_encoder: {name: umt5, path: $WAN}
noise_schedule: {name: rectified_flow, shift: 3.0, model_timesteps: integer}
vtv: {name: ptss, p: 0.2}
sample: {sampler: {name: unipc}, schedule: {name: standard, spacing: flow, shift: 3.0}, steps: 4, cfg_scale: 5.0}
train: {steps: 20, batch_size: 2, lr: 1.0e-3, lora: {rank: 4}, ema_decay: 0.9, validate_every: 10,
        validate_clips: 2, log_every: 5, ckpt_every: 10, tensorboard: false}
EOF
$FVDM train "$OUT/lora.yaml" --run-dir "$OUT/run" --no-progress
CKPT=$OUT/run/checkpoints/last.pt
ls "$OUT/run/validation"

# 5. Export the adapter in both layouts.
$FVDM export "$CKPT" --adapter --out "$OUT/adapter"                             # pytorch_lora_weights.safetensors
$FVDM export "$CKPT" --adapter --format comfyui --out "$OUT/adapter_comfyui"    # wan_lora_comfyui.safetensors

# 6. Apply each adapter to the base through backbone.lora and sample (no checkpoint: the config builds the model).
for name in adapter adapter_comfyui; do
    cat > "$OUT/sample_$name.yaml" <<EOF
name: wan-tiny-$name
data: {name: shape_only, num_frames: 17, channels: 3, height: 32, width: 32}
backbone: {name: wan, size: tiny, pretrained: $WAN, lora: $OUT/$name}
autoencoder: {name: wan_vae, path: $WAN}
text_encoder: {name: umt5, path: $WAN}
noise_schedule: {name: rectified_flow, shift: 3.0, model_timesteps: integer}
vtv: ptss
sample: {sampler: {name: unipc}, schedule: {name: standard, spacing: flow, shift: 3.0}, steps: 4, cfg_scale: 5.0}
EOF
done
$FVDM sample --config "$OUT/sample_adapter.yaml" --task unconditional --prompt "a bright square moving" \
    --frames 5 --out "$OUT/samples/adapter"
$FVDM sample --config "$OUT/sample_adapter_comfyui.yaml" --task unconditional --prompt "a bright square moving" \
    --frames 5 --out "$OUT/samples/adapter_comfyui"
$FVDM sample --config "$OUT/sample_adapter.yaml" --task unconditional --prompt "a bright square moving" \
    --frames 5 --dtype bf16 --out "$OUT/samples/bf16"

echo "walkthrough done: $OUT"
