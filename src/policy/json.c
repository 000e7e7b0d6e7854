/*
 * json.c: a policy's YAML text as the equivalent JSON object, the shape the
 * gateway's API carries policies in (spec.policy, PATCH merges). Scalars
 * get the types the loader gives them (YAML 1.2 core schema: null, bool,
 * integer, else string; quoted scalars stay strings).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <yaml.h>

#include "err.h"
#include "policy.h"

#define Y2J_DEPTH 64     /* nesting of a converted YAML document */
#define Y2J_NODES 500000 /* nodes visited while converting */

struct y2j {
    yaml_document_t *doc;
    size_t visited;
};

/* A plain scalar's JSON type: null, bool, integer, or string (YAML 1.2
 * core schema, as the policy loader reads it). */
static cJSON *
y2j_scalar(const yaml_node_t *n)
{
    const char *s = (const char *)n->data.scalar.value;
    size_t len = n->data.scalar.length;

    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return cJSON_CreateString(s);
    if (len == 0 || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
        !strcmp(s, "NULL"))
        return cJSON_CreateNull();
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE"))
        return cJSON_CreateTrue();
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE"))
        return cJSON_CreateFalse();
    {
        const char *p = s + (*s == '+' || *s == '-');
        size_t digits = strlen(p);

        /* Integers that a double holds exactly; anything else stays text. */
        if (digits > 0 && digits <= 15 && strspn(p, "0123456789") == digits)
            return cJSON_CreateNumber(strtod(s, NULL));
    }
    return cJSON_CreateString(s);
}

static cJSON *
y2j_node(struct y2j *c, yaml_node_t *n, int depth, struct err *e)
{
    cJSON *out;

    if (!n || depth > Y2J_DEPTH || ++c->visited > Y2J_NODES) {
        err_set(e, EINVAL, "policy: too deeply nested or too large to convert");
        return NULL;
    }
    switch (n->type) {
    case YAML_SCALAR_NODE: return y2j_scalar(n);
    case YAML_SEQUENCE_NODE:
        out = cJSON_CreateArray();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            cJSON *v = y2j_node(c, yaml_document_get_node(c->doc, *it), depth + 1, e);

            if (!v) {
                cJSON_Delete(out);
                return NULL;
            }
            cJSON_AddItemToArray(out, v);
        }
        return out;
    case YAML_MAPPING_NODE:
        out = cJSON_CreateObject();
        for (yaml_node_pair_t *pr = n->data.mapping.pairs.start; pr < n->data.mapping.pairs.top;
             pr++) {
            yaml_node_t *k = yaml_document_get_node(c->doc, pr->key);
            cJSON *v;

            if (!k || k->type != YAML_SCALAR_NODE) {
                cJSON_Delete(out);
                err_set(e, EINVAL, "policy: a mapping key is not a scalar");
                return NULL;
            }
            v = y2j_node(c, yaml_document_get_node(c->doc, pr->value), depth + 1, e);
            if (!v) {
                cJSON_Delete(out);
                return NULL;
            }
            cJSON_AddItemToObject(out, (const char *)k->data.scalar.value, v);
        }
        return out;
    default: err_set(e, EINVAL, "policy: unexpected YAML node"); return NULL;
    }
}

cJSON *
policy_yaml_to_json(const char *text, size_t len, struct err *e)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    struct y2j c = { &doc, 0 };
    cJSON *out = NULL;

    if (!yaml_parser_initialize(&parser)) {
        err_set(e, ENOMEM, "yaml parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err_set(e, EINVAL, "policy: YAML: %s", parser.problem ? parser.problem : "error");
        yaml_parser_delete(&parser);
        return NULL;
    }
    out = y2j_node(&c, yaml_document_get_root_node(&doc), 0, e);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (out && !cJSON_IsObject(out)) {
        cJSON_Delete(out);
        err_set(e, EINVAL, "policy: not a mapping");
        return NULL;
    }
    return out;
}
