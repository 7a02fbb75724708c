"""ImageNet-like JPEGs from the photos Debian's python3-skimage ships: random crops of random
scalings, 500x375 (or 375x500), quality 75-95, half of them mirrored.
Usage: /usr/bin/python3 bench/make_photos.py OUT_FOLDER COUNT"""
import os, random, sys
from PIL import Image

SOURCE = "/usr/lib/python3/dist-packages/skimage/data"
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
         "hubble_deep_field.jpg", "retina.jpg"]

out, count = sys.argv[1], int(sys.argv[2])
photos = [Image.open(os.path.join(SOURCE, n)).convert("RGB") for n in NAMES]
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
for i in range(count):
    photo = photos[i % len(photos)]
    w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
    least = max(w / photo.size[0], h / photo.size[1])
    s = rng.uniform(least, least * 1.6)
    big = photo.resize((max(w, round(photo.size[0] * s)), max(h, round(photo.size[1] * s))), Image.BICUBIC)
    x, y = rng.randint(0, big.size[0] - w), rng.randint(0, big.size[1] - h)
    image = big.crop((x, y, x + w, y + h))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image.save(os.path.join(out, f"{i:04d}.JPEG"), quality=rng.choice([75, 85, 90, 95]))
