/*
 * handlers/openapi.c — GET /openapi.json: the API description, served byte for byte as
 * openapi/openapi.json, the single source (OpenAPI 3.1; test/e2e/test_openapi.py checks the
 * server's real answers against it and that what is served equals the file).
 *
 * The file is compiled in: the Makefile turns it into shim/handlers/openapi.json.inc (generated,
 * git-ignored, rebuilt when the JSON changes), a list of byte values included below. Edit the JSON,
 * never the .inc.
 */
#include "handlers.h"
#include "respond.h"

static const unsigned char openapi_json[] = {
#include "openapi.json.inc"
    0 /* so that the array is never empty; not served */
};

void handle_openapi(h2o_req_t *req)
{
	respond(req, 200, "application/json", (const char *)openapi_json, sizeof(openapi_json) - 1);
}
