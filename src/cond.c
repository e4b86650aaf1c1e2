/* cond.c - RFC 9110 preconditions (section 13.1). */
#include "kv/cond.h"

#include <string.h>

#include "kv/error.h"

static int ows(char ch) { return ch == ' ' || ch == '\t'; }

/* etagc: %x21 / %x23-7E / obs-text, that is any visible byte but '"'. */
static int etagc(unsigned char ch) { return ch == 0x21 || ch >= 0x23; }

/* Parses one entity tag at s[*i]; a tag of digits only (no leading zero)
 * is a revision. */
static int parse_tag(const char *s, size_t len, size_t *i, uint64_t *rev,
                     uint8_t *num, uint8_t *weak) {
  size_t j = *i, start;
  uint64_t v = 0;
  int digits = 1;

  *weak = 0;
  if (j + 1 < len && s[j] == 'W' && s[j + 1] == '/') {
    *weak = 1;
    j += 2;
  }
  if (j >= len || s[j] != '"') return KV_EBADCOND;
  start = ++j;
  for (; j < len && s[j] != '"'; j++) {
    unsigned char ch = (unsigned char)s[j];
    if (!etagc(ch) || ch == 0x7f) return KV_EBADCOND;
    if (ch < '0' || ch > '9' || v > (UINT64_MAX - 9) / 10)
      digits = 0;
    else
      v = v * 10 + (uint64_t)(ch - '0');
  }
  if (j >= len) return KV_EBADCOND; /* no closing quote */
  if (j == start || (s[start] == '0' && j - start > 1)) digits = 0;
  *rev = v;
  *num = (uint8_t)digits;
  *i = j + 1;
  return 0;
}

int kv_cond_parse(const char *s, size_t len, kv_cond_list_t *out) {
  size_t i = 0;

  memset(out, 0, sizeof(*out));
  out->present = 1;
  while (i < len && ows(s[i])) i++;
  while (len > i && ows(s[len - 1])) len--;
  if (len - i == 1 && s[i] == '*') {
    out->any = 1;
    return 0;
  }
  for (;;) {
    uint64_t rev;
    uint8_t num, weak;
    /* Empty list elements (",,") are allowed, as RFC 9110 5.6.1 says. */
    while (i < len && (ows(s[i]) || s[i] == ',')) i++;
    if (i >= len) break;
    if (out->n == KV_COND_TAGS) return KV_EBADCOND;
    if (parse_tag(s, len, &i, &rev, &num, &weak) != 0) return KV_EBADCOND;
    out->rev[out->n] = rev;
    if (num) out->num |= UINT32_C(1) << out->n;
    if (weak) out->weak |= UINT32_C(1) << out->n;
    out->n++;
    while (i < len && ows(s[i])) i++;
    if (i < len && s[i] != ',') return KV_EBADCOND;
  }
  return out->n > 0 ? 0 : KV_EBADCOND;
}

/* Whether l lists rev: strongly (weak tags never match), or weakly. */
static int listed(const kv_cond_list_t *l, uint64_t rev, int weak_ok) {
  for (unsigned k = 0; k < l->n; k++)
    if ((l->num >> k & 1) && l->rev[k] == rev &&
        (weak_ok || !(l->weak >> k & 1)))
      return 1;
  return 0;
}

int kv_cond_eval(const kv_cond_t *c, int exists, uint64_t rev, int read) {
  if (c->match.present &&
      !(exists && (c->match.any || listed(&c->match, rev, 0))))
    return KV_EPRECOND;
  if (c->none.present && exists && (c->none.any || listed(&c->none, rev, 1)))
    return read ? 1 : KV_EPRECOND;
  return 0;
}
