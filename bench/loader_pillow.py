"""One data-loader worker in Python doing what `vavae bench loader` does: Pillow decode, ADM's
center_crop_arr resize (box-halving, then bicubic), random crop, random flip, float [-1, 1] batches.
With --draft, Pillow's draft() decodes JPEGs DCT-scaled first (as --jpeg-dct-scaling does).
Prints one JSON line like vavae bench. Usage: loader_pillow.py FOLDER RES BATCH STEPS [--draft]"""
import glob, json, random, sys, time
import numpy as np
from PIL import Image

folder, res, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
draft = "--draft" in sys.argv
files = sorted(glob.glob(folder + "/**/*.JPEG", recursive=True))
rng = random.Random(0)

def load(path):
    image = Image.open(path)
    if draft:
        image.draft("RGB", (res, res))
    image = image.convert("RGB")
    while min(*image.size) >= 2 * res:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = res / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    left, top = rng.randint(0, image.size[0] - res), rng.randint(0, image.size[1] - res)
    image = image.crop((left, top, left + res, top + res))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(image)

def one_pass():
    for b in range(len(files) // batch):
        pixels = np.stack([load(f) for f in files[b * batch:(b + 1) * batch]])
        np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1

one_pass()
seconds = []
for _ in range(steps):
    t0 = time.perf_counter()
    one_pass()
    seconds.append(time.perf_counter() - t0)
median = sorted(seconds)[len(seconds) // 2]
images = len(files) // batch * batch
print(json.dumps({"impl": "pillow", "bench": "loader", "res": res, "draft": draft, "images_per_s": images / median,
                  "pillow": Image.__version__}))
