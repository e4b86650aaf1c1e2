"""Listing (contract v2, section 3, and docs issue 11's decisions): GET /
with prefix, keys, after or limit lists the keys that start with the
prefix, sorted by bytes, as an object or an array, in pages that name the
next one in a Link header; query values decode as forms; a bad value of a
known parameter is 400; unknown parameters are ignored, so GET /?_=1 is
still the image."""

import json
import random
import threading
import time

import harness
from harness import Conn, Kvd, build_request, case, expect, jstr, kpath, kvdump, metric

JSON = "application/json"

# Bytes that the Link header leaves as they are; every other byte is %XX
# with upper-case hex.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def b(s):
    return s.encode("utf-8") if isinstance(s, str) else s


def pct(s):
    """s percent-encoded as the Link header encodes prefix and after."""
    return "".join(chr(c) if c in _UNRESERVED else "%%%02X" % c for c in b(s))




def bsorted(keys):
    return sorted(keys, key=b)


def obj(data, keys=None):
    """The listing body of data (a dict key -> value) restricted to keys
    (default: all), sorted by key bytes."""
    keys = bsorted(data if keys is None else keys)
    return b"{" + b",".join(jstr(k) + b":" + jstr(data[k]) for k in keys) + b"}\n"


def arr(keys):
    return b"[" + b",".join(jstr(k) for k in bsorted(keys)) + b"]\n"


def link(prefix, limit, after, keys=False):
    """The exact Link header value of a page that ended with after."""
    return '</?prefix=%s%s&limit=%d&after=%s>; rel="next"' % (
        pct(prefix), "&keys=true" if keys else "", limit, pct(after))


def fill(k, data):
    """PUTs data (key -> value) pipelined, 100 requests at a time."""
    items = list(data.items())
    with k.conn(timeout=20) as c:
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            c.send(b"".join(build_request("PUT", kpath(key), b(v)) for key, v in chunk))
            for key, _ in chunk:
                r = c.read_response("PUT")
                assert r.status in (201, 204), "PUT %r: %s" % (key, r.summary())




def rev_now(k):
    return int(metric(k, "kvd_revision"))


def expect_list(r, body=None, *, rev=None, link=None, head=False, length=None):
    """Asserts a listing answer: 200, Content-Type application/json,
    Content-Length, Kvd-Revision, no ETag, and a Link header exactly when
    link is given (its place among the headers is not fixed)."""
    links = r.get_all("Link")
    if link is None:
        assert not links, "unexpected Link %r: %s" % (links, r.summary())
    else:
        assert links == [link], "expected Link %r, got %r: %s" % (link, links, r.summary())
    assert r.get("ETag") is None, "a listing carries no ETag: %s" % r.summary()
    assert r.get("Kvd-Revision") is not None, "a listing carries Kvd-Revision: %s" % r.summary()
    bare = harness.Response(r.version, r.status, r.reason,
                            [(n, v) for n, v in r.headers if n.lower() != "link"],
                            r.body, r.head_raw)
    expect(bare, 200, body, ctype=JSON, rev=rev, head=head, length=length)
    return r


def get(c, target, method="GET"):
    return c.request(method, target)


# A store whose keys exercise prefixes, sorting and escaping.
SORTS = {
    "a": "1",
    "a b": "space",
    "a%": "percent",
    "a/b": "slash",
    "a\x00": "nul in the key",
    "ab": "2",
    "b": "3",
    "B": "upper",
    "a~": "tilde",
    "\u00e9": "e acute",
    "\u00e9t\u00e9": "summer",
    "\uffff": "last of the BMP",
    "\U0001F600": "grin",
    "user/1": "ann",
    "user/2": "bob",
    "users": "list",
    "_meta": "underscore",
}


# -- prefix, object and array -----------------------------------------------

@case("a prefix lists exactly the keys that start with it, sorted by bytes, as one JSON object")
def prefix_object():
    k = Kvd()
    fill(k, SORTS)
    n = len(SORTS)
    with k.conn() as c:
        for prefix, query in (("a", "a"), ("a/", "a%2F"), ("user/", "user%2F"), ("user", "user"),
                              ("\u00e9", "%C3%A9"), ("_", "_"), ("a\x00", "a%00"),
                              ("B", "B"), ("users", "users")):
            want = [key for key in SORTS if b(key).startswith(b(prefix))]
            assert want, prefix
            expect_list(get(c, "/?prefix=" + query), obj(SORTS, want), rev=n)
        # The empty prefix lists everything.
        expect_list(get(c, "/?prefix="), obj(SORTS), rev=n)
        # A prefix is bytes: "a" does not match "A", "\u00e9" does not match "e".
        expect_list(get(c, "/?prefix=A"), b"{}\n", rev=n)
        expect_list(get(c, "/?prefix=e"), b"{}\n", rev=n)


@case("a prefix that matches nothing, and any listing of an empty store, is 200 with an empty object or array")
def prefix_nothing():
    k = Kvd()
    with k.conn() as c:
        for q in ("prefix=", "prefix=zzz", "limit=1", "after=a", "keys=false", "prefix=x&limit=5"):
            expect_list(get(c, "/?" + q), b"{}\n", rev=0)
            expect_list(get(c, "/?" + q, "HEAD"), head=True, length=3, rev=0)
        for q in ("keys", "keys=true", "prefix=zzz&keys=true", "keys&limit=3&after=q"):
            expect_list(get(c, "/?" + q), b"[]\n", rev=0)
        fill(k, {"abc": "1", "abd": "2"})
        for q in ("prefix=zzz", "prefix=abcd", "prefix=b", "prefix=ab&after=abd", "after=abd"):
            expect_list(get(c, "/?" + q), b"{}\n", rev=2)
        expect_list(get(c, "/?prefix=zzz&keys"), b"[]\n", rev=2)


@case("keys=true and a bare keys list the keys only as a JSON array, keys=false is the object, and any other value is 400")
def keys_param():
    k = Kvd()
    fill(k, SORTS)
    n = len(SORTS)
    users = ["user/1", "user/2", "users"]
    with k.conn() as c:
        expect_list(get(c, "/?keys=true"), arr(SORTS), rev=n)
        expect_list(get(c, "/?keys"), arr(SORTS), rev=n)
        expect_list(get(c, "/?prefix=user&keys=true"), arr(users), rev=n)
        expect_list(get(c, "/?keys&prefix=user"), arr(users), rev=n)
        expect_list(get(c, "/?prefix=user&keys=false"), obj(SORTS, users), rev=n)
        expect_list(get(c, "/?keys=false"), obj(SORTS), rev=n)
        expect_list(get(c, "/?keys=t%72ue&prefix=users"), arr(["users"]), rev=n)
        for bad in ("TRUE", "True", "1", "0", "yes", "no", "t", "tru", "truee", "true%20",
                    "+true", "FALSE", "false%00", "null", "%FF", "%zz"):
            expect(get(c, "/?prefix=user&keys=" + bad), 400)
            expect(get(c, "/?keys=" + bad, "HEAD"), 400, head=True)
        c.assert_alive()
    assert rev_now(k) == n


@case("after lists only the keys that sort strictly after it, with or without prefix and limit")
def after_param():
    k = Kvd()
    fill(k, SORTS)
    n = len(SORTS)
    keys = bsorted(SORTS)
    with k.conn() as c:
        for after in ("a", "a/b", "a/", "ab", "b", "\u00e9", "\u00e8", "users", "\U0001F600",
                      "\U0001F601", "", "0", "a\x00"):
            want = [key for key in keys if b(key) > b(after)]
            expect_list(get(c, "/?after=" + pct(after)), obj(SORTS, want), rev=n)
            expect_list(get(c, "/?keys&after=" + pct(after)), arr(want), rev=n)
        # With a prefix: after before, inside and past the prefix's range.
        pre = [key for key in keys if key.startswith("user")]
        expect_list(get(c, "/?prefix=user&after=a"), obj(SORTS, pre), rev=n)
        expect_list(get(c, "/?prefix=user&after=user%2F1"), obj(SORTS, pre[1:]), rev=n)
        expect_list(get(c, "/?prefix=user&after=user%2F1x"), obj(SORTS, pre[1:]), rev=n)
        expect_list(get(c, "/?prefix=user&after=users"), b"{}\n", rev=n)
        expect_list(get(c, "/?prefix=user&after=z"), b"{}\n", rev=n)
        # With a limit.
        i = keys.index("a/b") + 1
        expect_list(get(c, "/?after=a%2Fb&limit=3"), obj(SORTS, keys[i:i + 3]),
                    link=link("", 3, keys[i + 2]), rev=n)


@case("limit from 1 to 100000 gives exactly that many entries when that many remain, else the rest with no Link")
def limit_edges():
    k = Kvd()
    data = {"k%d" % i: "v%d" % i for i in range(1, 6)}
    fill(k, data)
    with k.conn() as c:
        expect_list(get(c, "/?limit=1"), obj(data, ["k1"]), link=link("", 1, "k1"), rev=5)
        expect_list(get(c, "/?limit=4"), obj(data, ["k1", "k2", "k3", "k4"]),
                    link=link("", 4, "k4"), rev=5)
        # Exactly limit entries left: all of them, and this is the last page.
        expect_list(get(c, "/?limit=5"), obj(data), rev=5)
        expect_list(get(c, "/?limit=6"), obj(data), rev=5)
        expect_list(get(c, "/?limit=100000"), obj(data), rev=5)
        expect_list(get(c, "/?limit=100000&keys"), arr(data), rev=5)
        expect_list(get(c, "/?after=k4&limit=1"), obj(data, ["k5"]), rev=5)
        expect_list(get(c, "/?after=k3&limit=1"), obj(data, ["k4"]), link=link("", 1, "k4"), rev=5)
        expect_list(get(c, "/?after=k5&limit=1"), b"{}\n", rev=5)
        expect_list(get(c, "/?prefix=k&limit=2&keys=true"), arr(["k1", "k2"]),
                    link=link("k", 2, "k2", keys=True), rev=5)
        # The value is form-decoded before it is read as a number.
        expect_list(get(c, "/?limit=%32"), obj(data, ["k1", "k2"]), link=link("", 2, "k2"), rev=5)


@case("limit 0, 100001, empty, negative, signed, fractional, huge or not digits gets 400 with a one-line body and writes nothing")
def limit_bad():
    k = Kvd()
    fill(k, {"a": "1", "b": "2"})
    with k.conn() as c:
        for bad in ("0", "100001", "", "-1", "+5", "%2B5", "1x", "x", "1.0", "1e3", "0x10",
                    "%201", "1%20", "1%00", "99999999999999999999999", "18446744073709551617",
                    "%EF%BC%91", "%FF", "%zz", "%3"):
            for q in ("limit=" + bad, "prefix=a&limit=" + bad, "limit=" + bad + "&keys"):
                expect(get(c, "/?" + q), 400)
            expect(get(c, "/?limit=" + bad, "HEAD"), 400, head=True)
        # A bare limit has the empty value.
        expect(get(c, "/?limit"), 400)
        c.assert_alive()
        expect(c.request("GET", "/a"), 200, b"1", etag=1, rev=2)
    assert rev_now(k) == 2


# -- paging and the Link header -----------------------------------------------

PAGED = "p q/\u00e9%"   # a prefix with a space, a slash, UTF-8 and a percent
PAGED_KEYS = [PAGED + s for s in ("&=?#", "+", "1", "a b", "~-._", "\U0001F600")]


def walk(c, first, limit, prefix, keys, data, rev, max_pages=50):
    """Follows the Link headers from the request target first; asserts every
    page exactly and returns the pages' keys."""
    target, pages = first, []
    want = bsorted(key for key in data if b(key).startswith(b(prefix)))
    for _ in range(max_pages):
        r = get(c, target)
        page = want[len(sum(pages, [])):][:limit]
        rest = len(want) - len(sum(pages, [])) - len(page)
        nxt = link(prefix, limit, page[-1], keys) if rest > 0 else None
        expect_list(r, arr(page) if keys else obj(data, page), link=nxt, rev=rev)
        pages.append(page)
        if nxt is None:
            return pages
        target = nxt[1:nxt.index(">")]
    raise AssertionError("more than %d pages" % max_pages)


@case("the Link header names the next page with prefix, keys, limit and after percent-encoded, and following it pages through every key once")
def link_header():
    k = Kvd()
    data = {key: "v" + str(i) for i, key in enumerate(PAGED_KEYS)}
    data.update({"p q": "outside", "p q/": "inside", "p q/\u00e9": "short", "zz": "last"})
    fill(k, data)
    n = len(data)
    with k.conn() as c:
        # Keys only, the prefix sent with '+' for the space and a bare keys:
        # three pages of two, and the last one, although full, has no Link.
        pages = walk(c, "/?prefix=p+q%2F%C3%A9%25&keys&limit=2", 2, PAGED, True, data, n)
        assert pages == [bsorted(PAGED_KEYS)[i:i + 2] for i in (0, 2, 4)], pages
        r = get(c, "/?prefix=p+q%2F%C3%A9%25&keys&limit=2")
        assert r.get("Link") == ('</?prefix=p%20q%2F%C3%A9%25&keys=true&limit=2'
                                 '&after=p%20q%2F%C3%A9%25%2B>; rel="next"'), r.get("Link")
        # The object, four then two; keys=false and unknown parameters are
        # not carried into the Link.
        pages = walk(c, "/?_=7&keys=false&limit=4&prefix=p%20q%2F%C3%A9%25", 4, PAGED, False, data, n)
        assert [len(p) for p in pages] == [4, 2], pages
        # No prefix parameter: the Link still starts with an empty prefix=,
        # and after names the last key sent, not the one asked for.
        pages = walk(c, "/?limit=3", 3, "", False, data, n)
        assert sum(pages, []) == bsorted(data), pages
        r = get(c, "/?after=p+q&limit=1")
        expect_list(r, obj(data, ["p q/"]), link=link("", 1, "p q/"), rev=n)
        assert r.get("Link") == '</?prefix=&limit=1&after=p%20q%2F>; rel="next"', r.get("Link")
        r = get(c, "/?limit=1&after=p%20q%2F%C3%A9%25%7E-._")
        assert r.get("Link") == '</?prefix=&limit=1&after=p%20q%2F%C3%A9%25%F0%9F%98%80>; rel="next"', \
            r.summary()
        # Limit 1 through everything: one key a page.
        pages = walk(c, "/?limit=1&keys=true", 1, "", True, data, n, max_pages=20)
        assert len(pages) == n and all(len(p) == 1 for p in pages), pages


@case("HEAD of a listing has the GET status and headers, Link included, and no body")
def head_listing():
    k = Kvd()
    fill(k, SORTS)
    with k.conn() as c:
        for q in ("prefix=a", "prefix=a&limit=2", "keys&limit=3&after=a", "prefix=nothing",
                  "limit=100000", "prefix="):
            g = get(c, "/?" + q)
            h = get(c, "/?" + q, "HEAD")
            expect_list(g, rev=len(SORTS), link=g.get("Link"))
            expect_list(h, g.body, head=True, rev=len(SORTS), link=g.get("Link"))
            assert [x for x in h.headers if x[0] != "Date"] == \
                [x for x in g.headers if x[0] != "Date"], (h.summary(), g.summary())
        c.assert_alive()


# -- decoding of the query ------------------------------------------------------

@case("query values decode as forms: plus is a space and %XX a byte, in either hex case")
def decoding():
    k = Kvd()
    data = {"a b": "space", "a+b": "plus", "a b/c": "deeper", "\u00e9": "e acute", "a%b": "pct",
            "a&b": "amp", "a=b": "eq"}
    fill(k, data)
    n = len(data)
    with k.conn() as c:
        for q in ("a+b", "a%20b", "a%20%62"):
            expect_list(get(c, "/?prefix=" + q), obj(data, ["a b", "a b/c"]), rev=n)
        expect_list(get(c, "/?prefix=a%2Bb"), obj(data, ["a+b"]), rev=n)
        expect_list(get(c, "/?prefix=a%2bb"), obj(data, ["a+b"]), rev=n)
        expect_list(get(c, "/?prefix=%c3%a9"), obj(data, ["\u00e9"]), rev=n)
        expect_list(get(c, "/?prefix=a%25"), obj(data, ["a%b"]), rev=n)
        expect_list(get(c, "/?prefix=a%26b"), obj(data, ["a&b"]), rev=n)
        expect_list(get(c, "/?prefix=a%3Db"), obj(data, ["a=b"]), rev=n)
        expect_list(get(c, "/?after=a+b&prefix=a+b"), obj(data, ["a b/c"]), rev=n)
        expect_list(get(c, "/?keys&after=a%2Bb"), arr([x for x in data if b(x) > b"a+b"]), rev=n)
        # The first occurrence of a repeated parameter wins.
        expect_list(get(c, "/?prefix=a%2B&prefix=a+"), obj(data, ["a+b"]), rev=n)
        expect_list(get(c, "/?limit=1&limit=0&prefix=a+b"), obj(data, ["a b"]),
                    link=link("a b", 1, "a b"), rev=n)
        expect(get(c, "/?limit=0&limit=1"), 400)
        expect_list(get(c, "/?keys=true&keys=bad&prefix=a%3D"), arr(["a=b"]), rev=n)
        expect(get(c, "/?keys=bad&keys=true"), 400)
        expect_list(get(c, "/?after=a&after=%C3%A9&keys"), arr([x for x in data if b(x) > b"a"]), rev=n)


@case("a known parameter that is not valid UTF-8 after decoding gets 400 and the largest code point is fine")
def invalid_utf8():
    k = Kvd()
    fill(k, {"a": "1"})
    with k.conn() as c:
        for enc in ("%FF", "%C0%80", "%C1%BF", "%ED%A0%80", "%F4%90%80%80", "%E2%82", "a%80",
                    "%F8%88%80%80%80", "%C3", "%E0%80%AF"):
            for name in ("prefix", "after", "keys", "limit"):
                expect(get(c, "/?%s=%s" % (name, enc)), 400)
            expect(get(c, "/?limit=1&after=" + enc), 400)
        expect_list(get(c, "/?prefix=%F4%8F%BF%BF"), b"{}\n", rev=1)
        expect_list(get(c, "/?after=%F4%8F%BF%BF"), b"{}\n", rev=1)
        c.assert_alive()
    assert rev_now(k) == 1


@case("a malformed escape in a known parameter gets 400")
def malformed_escape():
    k = Kvd()
    fill(k, {"a": "1"})
    with k.conn() as c:
        for enc in ("%zz", "%4", "%", "a%", "%G0", "%%41", "a%2", "%-1"):
            for name in ("prefix", "after", "keys", "limit"):
                expect(get(c, "/?%s=%s" % (name, enc)), 400)
                expect(get(c, "/?%s=%s" % (name, enc), "HEAD"), 400, head=True)
        c.assert_alive()
    assert rev_now(k) == 1


@case("unknown parameters are ignored: GET /?_=1 is the image with its ETag, and a listing with them is the same listing")
def unknown_params():
    k = Kvd()
    fill(k, SORTS)
    n = len(SORTS)
    image = obj(SORTS)
    with k.conn() as c:
        assert k.dump() == image
        for q in ("_=1", "_=1&x=2", "", "&", "&&", "prefixes=a", "limits=0", "key=1",
                  "after_=b", "keyz", "_=%FF", "_=%zz", "x=%", "_=1&_=2"):
            expect(get(c, "/?" + q), 200, image, ctype=JSON, etag=n, rev=n)
            expect(get(c, "/?" + q, "HEAD"), 200, head=True, length=len(image), ctype=JSON,
                   etag=n, rev=n)
        expect(c.request("GET", "/?_=1", headers=[("If-None-Match", '"%d"' % n)]), 304, etag=n, rev=n)
        want = obj(SORTS, ["user/1", "user/2", "users"])
        for q in ("prefix=user&_=1", "_=1&prefix=user", "x=%zz&prefix=user", "y=%FF&prefix=user",
                  "prefix=user&limit_=0&keys_=bad"):
            expect_list(get(c, "/?" + q), want, rev=n)


# -- order, encoding and revision ----------------------------------------------

@case("keys sort by their bytes: a, a NUL, a space, a%, a/b, ab, b and multi-byte UTF-8 after ASCII")
def sort_order():
    k = Kvd()
    fill(k, SORTS)
    n = len(SORTS)
    keys = bsorted(SORTS)
    assert keys.index("a") < keys.index("a\x00") < keys.index("a b") < keys.index("a/b") \
        < keys.index("ab") < keys.index("b") < keys.index("\u00e9") < keys.index("\uffff") \
        < keys.index("\U0001F600")
    with k.conn() as c:
        r = get(c, "/?keys")
        expect_list(r, arr(keys), rev=n)
        got = json.loads(r.body)
        assert [b(x) for x in got] == sorted(b(x) for x in got), got
        # Not code-unit (UTF-16) order: U+FFFF sorts before U+1F600.
        assert got.index("\uffff") < got.index("\U0001F600"), got
        expect_list(get(c, "/?prefix=a&keys"),
                    arr(["a", "a\x00", "a b", "a%", "a/b", "a~", "ab"]), rev=n)
        pages = walk(c, "/?keys&limit=4", 4, "", True, SORTS, n)
        assert sum(pages, []) == keys


ESCAPES = {
    "plain": "value",
    "empty": "",
    "quote\"back\\slash": "\"\\",
    "ctl": "".join(chr(i) for i in range(32)) + "\x7f",
    "nul\x00key": "a\x00b",
    "slash/key": "/a/b/",
    "utf8 \u00e9": "\u00e9\u20ac\U0001F600\uffff",
    "tab\tkey\n": "line\r\nbreak\f\b",
    "_under": "underscore",
    "big": "0123456789\n" * 20000,
}


@case("values are encoded exactly as GET / encodes them: a listing of the empty prefix without limit equals GET / byte for byte")
def same_encoding():
    k = Kvd()
    fill(k, ESCAPES)
    n = len(ESCAPES)
    image = k.dump()
    # The encoder here is the image's (checked against the running kvd).
    assert image == obj(ESCAPES), (image[:300], obj(ESCAPES)[:300])
    with k.conn() as c:
        for q in ("prefix=", "keys=false", "after=", "limit=100000", "prefix=&keys=false&limit=100000",
                  "after=&_=1"):
            r = get(c, "/?" + q)
            expect_list(r, image, rev=n)
        expect_list(get(c, "/?keys"), arr(ESCAPES), rev=n)
        # A prefix's listing is kvdump --prefix of the same state.
        for prefix in ("nul", "tab\t", "utf8 ", "quote\"", "ctl", "b", "zzz"):
            out = kvdump("--prefix", prefix, k.data)
            assert out.rc == 0, out
            r = get(c, "/?prefix=" + pct(prefix))
            expect_list(r, out.out, rev=n)
        # Paged with limit, the pages put together hold the same entries.
        pages = walk(c, "/?limit=3", 3, "", False, ESCAPES, n)
        assert sum(pages, []) == bsorted(ESCAPES)


@case("a listing's Kvd-Revision is the store's revision after the writes before it, on any connection")
def listing_revision():
    k = Kvd()
    with k.conn() as w, k.conn() as r:
        expect_list(get(r, "/?prefix=k"), b"{}\n", rev=0)
        expect(w.request("PUT", "/k1", b"a"), 201, etag=1, rev=1)
        expect_list(get(r, "/?prefix=k"), b'{"k1":"a"}\n', rev=1)
        expect(w.request("PUT", "/k2", b"b"), 201, etag=2, rev=2)
        expect(w.request("PUT", "/k1", b"c"), 204, etag=3, rev=3)
        expect(w.request("PUT", "/other", b"o"), 201, etag=4, rev=4)
        expect_list(get(r, "/?prefix=k"), b'{"k1":"c","k2":"b"}\n', rev=4)
        expect(w.request("DELETE", "/k2"), 204, rev=5)
        expect(w.request("DELETE", "/k2"), 404, b"key not found\n", rev=5)
        expect(w.request("PUT", "/k1", b"x", headers=[("If-Match", '"1"')]), 412)
        expect(w.request("PUT", "/k3", b"\xff"), 400)
        expect_list(get(r, "/?prefix=k&keys"), b'["k1"]\n', rev=5)
        expect_list(get(r, "/?limit=1"), b'{"k1":"c"}\n', link=link("", 1, "k1"), rev=5)
        expect_list(get(w, "/?after=k1"), b'{"other":"o"}\n', rev=5)
    assert rev_now(k) == 5


@case("metrics have a kvd_list_duration_seconds histogram that counts every listing")
def list_metric():
    k = Kvd()
    fill(k, {"a": "1", "b": "2"})
    text = k.request("GET", "/_metrics").body.decode()
    assert "# TYPE kvd_list_duration_seconds histogram\n" in text, \
        "no kvd_list_duration_seconds histogram in /_metrics"
    before = metric(k, "kvd_list_duration_seconds_count")
    for q, nxt in (("prefix=a", None), ("keys", None), ("limit=1", link("", 1, "a"))):
        expect_list(k.request("GET", "/?" + q), link=nxt)
    text = k.request("GET", "/_metrics").body.decode()
    assert metric(k, "kvd_list_duration_seconds_count") == before + 3, text
    inf = [line for line in text.splitlines()
           if line.startswith('kvd_list_duration_seconds_bucket{le="+Inf"} ')]
    assert inf == ['kvd_list_duration_seconds_bucket{le="+Inf"} %d' % (before + 3)], inf


# -- paging while others write --------------------------------------------------

@case("paging with limit while other threads write visits every key that exists throughout exactly once, in sorted disjoint pages", timeout=120)
def paging_under_writes():
    k = Kvd("--sync", "none")
    stable = {"s/%04d" % i: "v0" for i in range(0, 1200, 3)}
    fill(k, stable)
    fill(k, {"t/%d" % i: "outside" for i in range(50)})
    stop = threading.Event()
    problems, ops = [], [0, 0]
    deadline = time.monotonic() + 90

    def writer(w):
        rnd = random.Random(w)
        try:
            with Conn(k.port, timeout=10) as c:
                for i in range(1, 200_000):
                    if stop.is_set() or time.monotonic() > deadline:
                        break
                    n = rnd.randrange(1200)
                    op = rnd.randrange(5)
                    if op == 0:      # a key that sorts among the stable ones
                        r = c.request("PUT", kpath("s/%04dx" % n), b"transient")
                    elif op == 1:
                        r = c.request("DELETE", kpath("s/%04dx" % n))
                    elif op == 2:    # an update of a stable key
                        r = c.request("PUT", kpath("s/%04d" % (n - n % 3)), b"v%d" % i)
                    elif op == 3:    # outside the prefix
                        r = c.request("PUT", kpath("t/%d" % n), b"x")
                    else:
                        r = c.request("DELETE", kpath("t/%d" % n))
                    assert r.status in (201, 204, 404), r.summary()
                    ops[w] += 1
        except Exception as e:
            problems.append("writer %d: %r" % (w, e))

    ts = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(2)]
    for t in ts:
        t.start()
    try:
        with k.conn(timeout=10) as c:
            for limit in (7, 1, 64):
                while ops[0] + ops[1] < 20 and time.monotonic() < deadline and not problems:
                    time.sleep(0.01)
                seen, last, last_rev = {}, None, -1
                target = "/?prefix=s%%2F&limit=%d" % limit
                for _ in range(5000):
                    assert time.monotonic() < deadline, "paging ran out of time"
                    r = get(c, target)
                    assert r.status == 200 and r.get("Content-Type") == JSON, r.summary()
                    page = json.loads(r.body)
                    keys = list(page)
                    assert r.body == obj(page, keys), "page not sorted or not encoded as GET /: %r" % r.body[:300]
                    assert len(keys) <= limit, "%d entries for limit=%d: %r" % (len(keys), limit, r.body[:300])
                    rev = int(r.get("Kvd-Revision"))
                    assert rev >= last_rev, "Kvd-Revision went back from %d to %d" % (last_rev, rev)
                    last_rev = rev
                    if keys:
                        assert all(x.startswith("s/") for x in keys), keys
                        assert last is None or b(keys[0]) > b(last), \
                            "page starting %r overlaps the one that ended %r" % (keys[0], last)
                        last = keys[-1]
                    for key in keys:
                        seen[key] = seen.get(key, 0) + 1
                        if key in stable:
                            assert page[key] == "v0" or page[key].startswith("v"), page[key]
                    lk = r.get("Link")
                    if lk is None:
                        break
                    assert len(keys) == limit, "a page with a Link holds %d < %d entries" % (len(keys), limit)
                    assert lk == link("s/", limit, last), (lk, last)
                    target = lk[1:lk.index(">")]
                else:
                    raise AssertionError("more than 5000 pages")
                missing = [x for x in stable if seen.get(x, 0) == 0]
                twice = [x for x, m in seen.items() if m > 1]
                assert not missing, "stable keys never listed (limit %d): %r" % (limit, missing[:10])
                assert not twice, "keys listed twice (limit %d): %r" % (limit, twice[:10])
                assert not problems, problems
    finally:
        stop.set()
        for t in ts:
            t.join(20)
    assert not problems, problems
    assert ops[0] + ops[1] >= 20, "the writers hardly wrote: %r" % ops
