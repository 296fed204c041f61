#!/usr/bin/env python3
"""Deterministic people-like records for fixtures and benchmarks.

    python3 benches/gen_people.py ROWS OUT.csv [--seed N]

Columns: id (bigint), name (Chinese), phone (11 digits), id_card (18
characters with a GB 11643 check digit, so about 1 in 11 ends in X),
dept_code (int), amount (decimal, 2 places), created_at (timestamp),
address (Chinese, some with commas and quotes, so CSV quoting is exercised).
About 120 bytes a row: 5,000,000 rows is about 600 MB.
"""
import argparse
import random

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍红娥玲芬建国建华志强文斌海燕雪梅慧敏晓东俊杰子涵欣怡浩然梓萱宇轩"
CITIES = ["北京市朝阳区", "上海市浦东新区", "广州市天河区", "深圳市南山区", "杭州市西湖区", "成都市武侯区", "武汉市洪山区", "西安市雁塔区", "南京市鼓楼区", "重庆市渝中区"]
ROADS = ["建国路", "人民路", "解放路", "中山路", "长江路", "和平街", "科技园路", "学院路"]
REGIONS = [110101, 110105, 310115, 440106, 440305, 330106, 510107, 420111, 610113, 320106, 500103]
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"


def id_card(rng):
    region = rng.choice(REGIONS)
    year = rng.randint(1940, 2006)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    seq = rng.randint(0, 999)
    body = f"{region:06d}{year:04d}{month:02d}{day:02d}{seq:03d}"
    s = sum(int(c) * w for c, w in zip(body, WEIGHTS))
    return body + CHECK[s % 11]


def csv_field(s):
    if any(c in s for c in ',"\n'):
        return '"' + s.replace('"', '""') + '"'
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", type=int)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w", encoding="utf-8", newline="") as f:
        f.write("id,name,phone,id_card,dept_code,amount,created_at,address\n")
        buf = []
        for i in range(1, a.rows + 1):
            name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
            phone = f"1{rng.choice('3456789')}{rng.randint(0, 999999999):09d}"
            dept = rng.randint(100, 999)
            amount = f"{rng.randint(0, 9999999) / 100:.2f}"
            ts = f"{rng.randint(2020, 2025):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
            addr = f"{rng.choice(CITIES)}{rng.choice(ROADS)}{rng.randint(1, 999)}号"
            r = rng.random()
            if r < 0.05:
                addr += f",{rng.randint(1, 30)}栋{rng.randint(101, 2999)}室"
            elif r < 0.06:
                addr += '"东门"'
            buf.append(f"{i},{name},{phone},{id_card(rng)},{dept},{amount},{ts},{csv_field(addr)}\n")
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


if __name__ == "__main__":
    main()
