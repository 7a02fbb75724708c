#!/usr/bin/env python3
"""Writes the hostile (and a few well-formed control) inputs under tests/hostile/.

Each file reproduces one attack on a parser: the tests feed every file to `vavae inspect` and
`vavae export` (exit 0 or 1, never a signal, within time and memory) and check each one's own
error. Standard library only; `convert` (ImageMagick) makes the CMYK JPEG. Run once; the outputs
are committed.
"""
import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name, data):
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# ---- pickle assembler (protocol 2 opcodes) -------------------------------------------------------
PROTO = b"\x80\x02"
STOP = b"."


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def integer(i):
    if 0 <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    raw = i.to_bytes((i.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def storage_pid(key, numel, storage="FloatStorage", view=None):
    items = [text("storage"), glob("torch", storage), text(key), text("cpu"), integer(numel)]
    if view is not None:
        items.append(tup(text(view[0]), integer(view[1]), integer(view[2])))
    return tup(*items) + b"Q"


def tensor(pid, offset, size, stride):
    args = tup(pid, integer(offset), tup(*map(integer, size)), tup(*map(integer, stride)), b"\x89",
               glob("collections", "OrderedDict") + b")R")
    return glob("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def state_dict(*entries):
    return PROTO + b"}(" + b"".join(text(k) + v for k, v in entries) + b"u" + STOP


def torch_zip(pkl, storages, deflate=False):
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def floats(*values):
    return struct.pack("<%df" % len(values), *values)


def patch_sizes(data, name, uncompressed):
    """Rewrites an entry's declared uncompressed size in its local and central headers."""
    data = bytearray(data)
    encoded = name.encode()
    local = data.find(b"PK\x03\x04" + data[4:4])
    pos = 0
    while True:
        pos = data.find(b"PK\x03\x04", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", data, pos + 26)[0]
        if bytes(data[pos + 30:pos + 30 + n]) == encoded:
            struct.pack_into("<I", data, pos + 22, uncompressed)
        pos += 4
    pos = 0
    while True:
        pos = data.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + n]) == encoded:
            struct.pack_into("<I", data, pos + 24, uncompressed)
        pos += 4
    del local
    return bytes(data)


def zip_files():
    w = tensor(storage_pid("0", 4), 0, [4], [1])
    out("ok_zip.pt", torch_zip(state_dict(("encoder.w", w)), {"0": floats(1, 2, 3, 4)}))
    out("deep_tuple.pt", torch_zip(PROTO + b")" + b"\x85" * 100000 + STOP, {}))
    # _rebuild_from_type_v2(func, type, args, state) wrapped 5000 times around itself.
    rft = glob("torch._tensor", "_rebuild_from_type_v2")
    level_open, level_close = b"(h\x00N", b"}t"
    nested = level_open * 5000 + b")" + level_close * 5000
    out("rebuild_from_type_deep.pt",
        torch_zip(PROTO + rft + b"q\x00" + b"0" + b"h\x00" + nested + b"R" + STOP, {}))
    out("self_append.pt", torch_zip(PROTO + b"]q\x00h\x00a" + STOP, {}))
    out("cycle.pt", torch_zip(PROTO + b"]q\x00h\x00\x85a" + STOP, {}))
    out("view_offset_overflow.pt",
        torch_zip(state_dict(("encoder.w", tensor(storage_pid("0", 4), 2**63 - 2, [4], [1]))), {"0": floats(1, 2, 3, 4)}))
    out("view_stride_overflow.pt",
        torch_zip(state_dict(("encoder.w", tensor(storage_pid("0", 4), 0, [3], [2**62]))), {"0": floats(1, 2, 3, 4)}))
    out("view_expand.pt",
        torch_zip(state_dict(("encoder.w", tensor(storage_pid("0", 4), 0, [2**40], [0]))), {"0": floats(1, 2, 3, 4)}))
    out("bad_memo.pt", torch_zip(PROTO + b"Np12x\n" + STOP, {}))
    out("empty_text_int.pt", torch_zip(PROTO + b"I\n" + STOP, {}))
    out("missing_record.pt", torch_zip(state_dict(("encoder.w", tensor(storage_pid("7", 4), 0, [4], [1]))), {}))
    out("storage_dtype_conflict.pt",
        torch_zip(state_dict(("encoder.a", tensor(storage_pid("0", 4), 0, [4], [1])),
                             ("encoder.b", tensor(storage_pid("0", 2, "LongStorage"), 0, [2], [1]))),
                  {"0": floats(1, 2, 3, 4)}))
    good = bytearray(torch_zip(state_dict(("encoder.w", w)), {"0": floats(1, 2, 3, 4)}))
    at = good.find(floats(1, 2, 3, 4))
    good[at] ^= 0x40
    out("crc_mismatch.pt", bytes(good))
    whole = torch_zip(state_dict(("encoder.w", w)), {"0": floats(1, 2, 3, 4)})
    out("truncated_zip.pt", whole[: len(whole) // 2])
    # A storage of 600M floats whose deflated record (16 KiB of zeros' code) declares 2.4 GB.
    bomb = torch_zip(state_dict(("encoder.w", tensor(storage_pid("0", 600_000_000), 0, [600_000_000], [1]))),
                     {"0": bytes(16 << 20)}, deflate=True)
    out("zip_bomb.pt", patch_sizes(bomb, "archive/data/0", 2_400_000_000))
    pkl_bomb = torch_zip(PROTO + b"N" + b"0N" * (8 << 20) + STOP, {}, deflate=True)
    out("pickle_inflation_bomb.pt", pkl_bomb)
    out("os_system.pt",
        torch_zip(state_dict(("encoder.w", w), ("cmd", glob("os", "system") + tup(text("touch /tmp/vavae_pwned")) + b"R")),
                  {"0": floats(1, 2, 3, 4)}))
    # 256 KiB of one-byte values: within the pickle's memory budget, and it must stay cheap.
    out("many_values.pt", torch_zip(PROTO + b"(" + b"N" * (256 << 10) + b"l" + STOP, {}))


def legacy(main_pickle, keys, storages):
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
             main_pickle, pickle.dumps(keys, protocol=2)]
    for numel, data in storages:
        parts.append(struct.pack("<q", numel) + data)
    return b"".join(parts)


def legacy_files():
    # Two tensors on one storage of 6 floats: a whole view and a legacy storage view at offset 2.
    whole = tensor(storage_pid("s0", 6), 0, [6], [1])
    view = tensor(storage_pid("s0", 6, view=("v1", 2, 3)), 1, [2], [1])
    out("ok_legacy_view.pth",
        legacy(state_dict(("encoder.whole", whole), ("encoder.view", view)), ["s0"], [(6, floats(0, 1, 2, 3, 4, 5))]))
    huge = tensor(storage_pid("s0", 10**12), 0, [4], [1])
    out("legacy_huge_storage.pth", legacy(state_dict(("encoder.w", huge)), ["s0"], [(4, floats(1, 2, 3, 4))]))
    w = tensor(storage_pid("s0", 4), 0, [4], [1])
    out("legacy_missing_data.pth", legacy(state_dict(("encoder.w", w)), [], []))
    out("legacy_truncated.pth", legacy(state_dict(("encoder.w", w)), ["s0"], [(4, floats(1, 2))]))
    out("legacy_bad_view.pth",
        legacy(state_dict(("encoder.w", tensor(storage_pid("s0", 4, view=("v", 2**63 - 1, 4)), 0, [1], [1]))), ["s0"],
               [(4, floats(1, 2, 3, 4))]))


def safetensors(header, data=b""):
    raw = header.encode() if isinstance(header, str) else header
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def safetensors_files():
    entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    out("dup_key.safetensors", safetensors('{"encoder.w":%s,"encoder.w":%s}' % (entry, entry), floats(1)))
    out("dup_metadata.safetensors",
        safetensors('{"__metadata__":{"a":"1","a":"2"},"encoder.w":%s}' % entry, floats(1)))
    out("deep_shape.safetensors",
        safetensors('{"encoder.w":{"dtype":"F32","shape":' + "[" * 100000 + "]" * 100000 + ',"data_offsets":[0,4]}}',
                    floats(1)))
    out("shape_overflow.safetensors",
        safetensors('{"encoder.w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}',
                    floats(1)))
    out("header_too_long.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    out("offsets_past_end.safetensors",
        safetensors('{"encoder.w":{"dtype":"F32","shape":[1000000],"data_offsets":[0,4000000]}}', floats(1)))
    name = "encoder.\x1b]0;owned\x07\x1b[2J\x1b[31m\u009b31m"
    header = '{"__metadata__":{"note\\u001b[5m":"\\u001b[41mblink"},"%s":%s}' % (
        name.encode("unicode_escape").decode().replace("\\x", "\\u00"), entry)
    out("escape_sequences.safetensors", safetensors(header, floats(1)))


def png(width, height, color_type, bit_depth, rows, palette=None):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    body = chunk(b"IHDR", ihdr)
    if palette:
        body += chunk(b"PLTE", palette)
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def image_files():
    w, h = 8, 8
    gray = [bytes((x * 30 + y) % 256 for x in range(w)) for y in range(h)]
    out("images/gray.png", png(w, h, 0, 8, gray))
    out("images/gray_alpha.png", png(w, h, 4, 8, [bytes(v for p in r for v in (p, 200)) for r in gray]))
    out("images/rgba.png", png(w, h, 6, 8, [bytes(v for p in r for v in (p, 255 - p, 7, 128)) for r in gray]))
    out("images/gray16.png", png(w, h, 0, 16, [b"".join(struct.pack(">H", p * 257) for p in r) for r in gray]))
    out("images/rgb16.png", png(w, h, 2, 16, [b"".join(struct.pack(">HHH", p * 257, 0, 65535) for p in r) for r in gray]))
    out("images/palette.png", png(w, h, 3, 8, [bytes(p % 2 for p in r) for r in gray], palette=b"\x10\x20\x30\xf0\xe0\xd0"))
    # A 16000 x 16000 image (768 MB of pixels) declared by 66 bytes: refused before any pixel is allocated.
    out("images/bomb.png", png(16000, 16000, 2, 8, [b""])[:-12] + png(1, 1, 0, 8, [b"\x00"])[-12:])
    out("images/gif_named.png", b"GIF89a\x08\x00\x08\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
        b"\x00\x00\x00\x00\x08\x00\x08\x00\x00\x02\x07\x84\x8f\xa9\xcb\xed\x0f\x05\x00;")
    out("images/psd_named.png", b"8BPS\x00\x01" + bytes(20) + b"\x00\x03\x00\x00\x00\x08\x00\x08\x00\x08\x00\x03")
    out("images/truncated.png", png(w, h, 0, 8, gray)[:40])
    out("images/zero_bytes.png", b"")
    out("images/text.jpg", b"this is not a JPEG\n")
    ppm = b"P6\n8 8\n255\n" + bytes(v for y in range(8) for x in range(8) for v in (x * 32, y * 32, 128))
    subprocess.run(["convert", "ppm:-", "-colorspace", "CMYK", "-quality", "95", os.path.join(HERE, "images/cmyk.jpg")],
                   input=ppm, check=True)
    subprocess.run(["convert", "ppm:-", "-colorspace", "Gray", os.path.join(HERE, "images/gray.jpg")], input=ppm, check=True)


def config_files():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append("a%d: &a%d [%s]" % (i, i, ",".join(["*a%d" % (i - 1)] * 9)))
    out("billion_laughs.yaml", ("\n".join(lines) + "\n").encode())
    out("deep.yaml", ("x: " + "[" * 5000 + "]" * 5000 + "\n").encode())
    out("deep.json", ('{"x":' + "[" * 100000 + "]" * 100000 + "}").encode())


if __name__ == "__main__":
    zip_files()
    legacy_files()
    safetensors_files()
    image_files()
    config_files()
    print("wrote", sum(len(f) for _, _, f in os.walk(HERE)) - 1, "files under", HERE, file=sys.stderr)
