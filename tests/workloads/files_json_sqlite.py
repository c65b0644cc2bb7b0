"""Test workload: files, json, sqlite3 and a subprocess, all under WORKDIR (argv[1])."""
import json
import os
import sqlite3
import subprocess
import sys

work = sys.argv[1]
data = os.path.join(work, "data")
os.makedirs(data)
records = [{"id": i, "name": f"item-{i}", "tags": ["a", "b"][: i % 3]} for i in range(50)]
with open(os.path.join(data, "records.json"), "w") as f:
    json.dump(records, f)
with open(os.path.join(data, "records.json")) as f:
    loaded = json.load(f)
db = sqlite3.connect(os.path.join(data, "records.db"))
db.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, name TEXT, ntags INTEGER)")
db.executemany("INSERT INTO r VALUES (?, ?, ?)", [(r["id"], r["name"], len(r["tags"])) for r in loaded])
db.commit()
(total,) = db.execute("SELECT SUM(ntags) FROM r").fetchone()
db.close()
os.rename(os.path.join(data, "records.json"), os.path.join(data, "records.old.json"))
out = subprocess.run(["wc", "-c", os.path.join(data, "records.old.json")], capture_output=True, text=True, check=True)
print(total, out.stdout.split()[0])
