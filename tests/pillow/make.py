"""Pillow's own resampling of one photo, the reference for io::resample and resize_shorter_side.

Run with Debian's python3-pil (Pillow 9.4) and python3-skimage (for the photo):
    /usr/bin/python3 tests/pillow/make.py tests/pillow
"""
import json, os, sys
from PIL import Image

out = sys.argv[1]
photo = Image.open("/usr/lib/python3/dist-packages/skimage/data/chelsea.png").convert("RGB")
source = photo.crop((101, 37, 101 + 157, 37 + 123))  # 157 x 123: odd on both sides
source.save(os.path.join(out, "source.png"))

def center_crop_arr(pil_image, image_size):  # guided-diffusion / LightningDiT, as written there
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
    left = (pil_image.size[0] - image_size) // 2
    top = (pil_image.size[1] - image_size) // 2
    return pil_image.crop((left, top, left + image_size, top + image_size))

cases = []
filters = {"box": Image.BOX, "bicubic": Image.BICUBIC}
for name, (w, h) in [("bicubic", (61, 47)), ("bicubic", (200, 96)), ("bicubic", (157, 50)), ("bicubic", (31, 123)),
                     ("box", (78, 61)), ("box", (40, 29))]:
    file = f"{name}_{w}x{h}.png"
    source.resize((w, h), resample=filters[name]).save(os.path.join(out, file))
    cases.append({"kind": "resize", "filter": name, "width": w, "height": h, "file": file})
for size in [24, 40, 61, 150]:
    file = f"center_crop_arr_{size}.png"
    center_crop_arr(source, size).save(os.path.join(out, file))
    cases.append({"kind": "center_crop_arr", "size": size, "file": file})
# libjpeg-turbo's DCT-scaled decoding through Pillow's draft(): ours must give the same pixels.
source.save(os.path.join(out, "source.jpg"), quality=90)
for request, denominator in [(0, 1), (60, 2), (30, 4), (15, 8)]:  # 0: the full-size decode
    image = Image.open(os.path.join(out, "source.jpg"))
    if request:
        image.draft("RGB", (request, request))
    file = f"draft_{request}.png"
    image.convert("RGB").save(os.path.join(out, file))
    cases.append({"kind": "jpeg_draft", "shorter_side_at_least": request, "denominator": denominator, "file": file})
json.dump({"pillow": Image.__version__, "source": "source.png", "cases": cases}, open(os.path.join(out, "cases.json"), "w"), indent=1)
