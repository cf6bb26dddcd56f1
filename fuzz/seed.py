#!/usr/bin/env python3
"""Seeds the fuzzers' corpora (fuzz/corpus/, not kept in the repository): the tracker
examples of the vendor's spec as printed (read from ../shared at run time), and a few
bodies of spoor's own in the shapes real clients send (cookie headers, GeneralInfo as a
string, a contact link), with small records, a feed and empty snapshots."""
import json
import pathlib
import re

here = pathlib.Path(__file__).resolve().parent
spec = here.parent.parent / "shared" / "spec" / "yespo-tracker-rest-api.md"
corpus = here / "corpus"


def put(target, name, data):
    folder = corpus / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


examples = []
if spec.exists():
    for block in re.findall(r"```[a-z]*\n(.*?)```", spec.read_text(), re.S):
        text = block.strip()
        if text.startswith("{"):
            examples.append(text)
own = [
    '{"GeneralInfo": {"eventName": "ProductPage", "siteId": "S", "cookies": "sc=a; _ga=1"},'
    ' "ProductPage": {"productKey": 1, "price": "10 EUR", "isInStock": "1", "tag_color": ["red"]}}',
    '{"GeneralInfo": "{\\"eventName\\": \\"CustomerData\\", \\"siteId\\": \\"S\\", \\"user_email\\": \\"A@x.com\\"}"}',
    '{"GeneralInfo": {"eventName": "PurchasedItems", "siteId": "S", "cookies": {"sc": "a"}},'
    ' "PurchasedItems": {"OrderNumber": "7", "Products": [{"product_id": "1", "unit_price": 2, "quantity": 1}],'
    ' "Tags": {"blockId": ["home"]}}}',
    '{"GeneralInfo": {"eventName": "ProductImpressions", "siteId": "S", "cookies": {"sc": "a"}},'
    ' "ProductImpression": [{"productKey": "1", "container_type": "home_a"}]}',
    '{"GeneralInfo": {"eventName": "ProductUpdate", "siteId": "S"}, "ProductUpdate": [{"product_id": "1",'
    ' "name": "Mug", "url": "/p/1", "category": "Home > Kitchen", "g:brand": {"x": [1]}}]}',
    '{"orgId": "1", "webId": "a", "user_email": "a@x.com"}',
]
for i, text in enumerate(examples + own):
    put("tracker", f"example-{i:03}", text)
    put("batch", f"json-{i:03}", b"\x00[" + text.encode() + b"]")
    put("batch", f"ndjson-{i:03}", b"\x01" + text.encode() + b"\n" + text.encode())
    try:
        event = json.loads(text.replace("\u00a0", " "))
    except json.JSONDecodeError:
        continue
    record = {"receivedAt": 1, "requestHash": "0" * 32, "event": event}
    put("record", f"json-{i:03}", json.dumps(record))
put("feed", "rss", '<?xml version="1.0"?><rss xmlns:g="http://base.google.com/ns/1.0"><channel>'
    '<item><g:id>1</g:id><g:title>Mug</g:title><g:price>12.50 EUR</g:price>'
    '<g:availability>in stock</g:availability><g:link>https://shop.example/1</g:link></item>'
    '</channel></rss>')
put("snapshot", "empty-state", '{"version": 4, "position": 0, "sites": {}}')
put("snapshot", "empty-index", b"SPOORDX2" + bytes(8) + (bytes(8) * 3) * 64)
print(f"{len(examples)} spec examples and {len(own)} of spoor's own in {corpus}")
