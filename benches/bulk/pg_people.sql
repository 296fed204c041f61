-- The PostgreSQL benchmark table: :rows people-like records, generated
-- deterministically in the server (bigint id, Chinese name, phone, id card,
-- department code, numeric(12,2) amount, timestamp, address).
--   psql -v rows=5000000 -f benches/bulk/pg_people.sql
CREATE SCHEMA IF NOT EXISTS tidex_bench;
DROP TABLE IF EXISTS tidex_bench.people;
CREATE TABLE tidex_bench.people (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    phone text,
    id_card text,
    dept_code integer,
    amount numeric(12,2),
    created_at timestamp,
    address text
);
INSERT INTO tidex_bench.people
SELECT g,
       (ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周'])[1 + g % 10]
         || (ARRAY['伟','芳','娜','秀英','敏','静','丽','强','磊','军','洋','勇'])[1 + (g / 10) % 12],
       '1' || (30 + g % 60)::text || lpad(((g * 7919) % 100000000)::text, 8, '0'),
       lpad((110000 + g % 900000)::text, 6, '0') || to_char(DATE '1950-01-01' + ((g * 37) % 20000)::int, 'YYYYMMDD')
         || lpad(((g * 31) % 1000)::text, 3, '0') || (ARRAY['0','1','2','3','4','5','6','7','8','9','X'])[1 + g % 11],
       100 + g % 400,
       ((g * 104729) % 100000000) / 100.0,
       TIMESTAMP '2020-01-01' + ((g * 7001) % 157680000) * interval '1 second',
       (ARRAY['北京市','上海市','广东省广州市','浙江省杭州市','四川省成都市'])[1 + g % 5]
         || (g % 999 + 1)::text || '号' || (ARRAY['人民路','解放路','中山路','建设路'])[1 + g % 4]
         || (g % 30 + 1)::text || '栋' || (g % 2000 + 1)::text || '室'
FROM generate_series(1::bigint, :rows) g;
ANALYZE tidex_bench.people;
