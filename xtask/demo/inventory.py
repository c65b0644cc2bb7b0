"""Demo workload for `cargo xtask demo`: a small inventory job.

Keeps an SQLite database, exports it as JSON, compresses the export with a gzip
subprocess, and hands the export to another owner (which needs CAP_CHOWN).
Usage: inventory.py WORKDIR
"""
import json
import os
import sqlite3
import subprocess
import sys

work = sys.argv[1]
os.makedirs(work, exist_ok=True)
db = sqlite3.connect(os.path.join(work, "inventory.db"))
db.execute("CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, count INTEGER)")
for name, count in [("bolts", 120), ("nuts", 80), ("washers", 300)]:
    db.execute("INSERT OR REPLACE INTO items VALUES (?, ?)", (name, count))
db.commit()
rows = dict(db.execute("SELECT name, count FROM items ORDER BY name"))
db.close()

export = os.path.join(work, "export.json")
tmp = export + ".tmp"
with open(tmp, "w") as f:
    json.dump({"items": rows, "total": sum(rows.values())}, f)
os.replace(tmp, export)
subprocess.run(["gzip", "-kf", export], check=True)
os.chown(export + ".gz", 1000, 1000)
print(f"exported {len(rows)} items, total {sum(rows.values())}")
