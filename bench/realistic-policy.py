"""The realistic policy of the benchmarks: 60 tools, deny_if conditions (regex, contains, in,
numeric) on the called tool, a require, a hidden tool, and two limits with a max high enough
never to deny. Written to the path given as the first argument; with --no-limits, the same
policy without the limits (for measuring the policy step alone)."""
import json, sys
tools = {}
for i in range(59):
    spec = {}
    if i % 2 == 0:
        spec["deny_if"] = [
            {"conditions": [{"path": "args.limit", "op": "gt", "value": 500}], "on_deny": "Too many rows."},
            {"conditions": [{"path": "args.env", "op": "in", "value": ["prod", "billing"]}]},
        ]
    if i % 3 == 0:
        spec["require"] = [{"conditions": [{"path": "args.project_id", "op": "exists", "value": True}]}]
    tools[f"tool_{i:02}"] = spec
tools["echo"] = {
    "require": [{"conditions": [{"path": "args.message", "op": "exists", "value": True}]}],
    "deny_if": [
        {"conditions": [{"path": "args.message", "op": "regex", "value": "(?is).*\\b(drop|truncate|delete)\\b.*"}]},
        {"conditions": [{"path": "args.message", "op": "contains", "value": "password"}]},
        {"conditions": [{"path": "args.env", "op": "in", "value": ["prod", "billing"]}]},
        {"conditions": [{"path": "args.limit", "op": "gt", "value": 500}]},
    ],
    "limits": [{"counter": "echo_rate", "window": "minute", "max": 100000000, "scope": "grant"}],
}
doc = {"version": "1", "default": "deny", "hide": ["delete_project"],
       "all_tools": {"limits": [{"counter": "calls", "window": "minute", "max": 100000000, "scope": "grant"}]},
       "tools": tools}
if "--no-limits" in sys.argv[2:]:
    del doc["all_tools"]
    del tools["echo"]["limits"]
json.dump(doc, open(sys.argv[1], "w"))
