/*
 * check_xg_metrics.c: the Prometheus exposition of a /status document
 * made here (so every value is known), and the process figures read from
 * /proc. promtool's own check of a live scrape is in
 * t/integ/test_admin_metrics.py.
 */
#include "xg_core.h"
#include "xg_metrics.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Two upstreams (a deribit one with everything, a raw one with the core
   fields only) and a listener whose address needs escaping. */
static const char status_doc[] =
    "{\"version\":\"9.9\",\"uptime_s\":1.5,"
    " \"upstreams\":["
    "  {\"name\":\"deribit\",\"state\":\"ready\",\"protocol\":\"deribit\","
    "   \"reconnect\":\"exponential\","
    "   \"url\":\"wss://h/ws?client_secret=HUSH\",\"connection_id\":7,"
    "   \"connects\":3,\"disconnects\":2,\"reconnect_attempts\":6,"
    "   \"failures_in_row\":0,\"breaker\":\"half-open\",\"breaker_trips\":1,"
    "   \"last_error\":\"close 1011 \\\"HUSH\\\"\",\"state_since_s\":12.25,"
    "   \"messages_in\":1000,\"bytes_in\":123456789012,"
    "   \"disconnect_reasons\":{\"closed\":1,\"lost\":1},"
    "   \"connect_failure_reasons\":{\"http\":4},"
    "   \"restore_seconds\":{\"le\":[0.005,0.5],\"counts\":[1,2,3],"
    "                        \"sum\":0.75,\"count\":3},"
    "   \"channels\":5,\"pending_requests\":2,\"queued_requests\":1,"
    "   \"last_restore_ms\":250,\"restores\":3,"
    "   \"requests_answered\":10,\"requests_timed_out\":1,"
    "   \"requests_outcome_unknown\":2,\"requests_rejected\":3,"
    "   \"publish\":{\"state\":\"connected\",\"published\":7,"
    "    \"requests\":{\"served\":11,\"refused\":4,\"malformed\":1,"
    "     \"stale\":2,\"in_flight\":3,\"edges\":2,\"answers\":9,"
    "     \"answers_lost\":76,\"notices_dropped\":1,\"waits\":5,"
    "     \"answers_held\":1024,\"state\":\"connecting\","
    "     \"reading\":false,\"last_id\":\"1-0\",\"connects\":2,"
    "     \"errors\":1,\"last_error\":\"HUSH\"}}},"
    "  {\"name\":\"raw\",\"state\":\"down\",\"protocol\":\"raw\","
    "   \"reconnect\":\"fixed\",\"connection_id\":1,\"connects\":0,"
    "   \"breaker\":\"off\",\"messages_in\":0}],"
    " \"listeners\":[{\"address\":\"a\\\"b\\\\c\",\"kind\":\"tcp\","
    "   \"upstream\":\"deribit\",\"clients\":4,\"messages_out\":99,"
    "   \"slow_consumer_closes\":1}],"
    " \"client_errors\":6}";

static char *text;

/* Renders the document (and PROCESS) into `text`. */
static void
render(const json_t *process)
{
    json_error_t err;
    json_t *doc = json_loads(status_doc, 0, &err);
    struct evbuffer *out = evbuffer_new();
    size_t n;

    ck_assert_msg(doc != NULL, "test document: %s", err.text);
    xg_metrics_render(out, doc, process);
    n = evbuffer_get_length(out);
    free(text);
    text = malloc(n + 1);
    evbuffer_remove(out, text, n);
    text[n] = '\0';
    evbuffer_free(out);
    json_decref(doc);
}

/* 1 when LINE is a whole line of `text`. */
static int
has_line(const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n') {
            return 1;
        }
        p += n;
    }
    return 0;
}

/* How many lines of `text` start with PREFIX. */
static int
count_lines(const char *prefix)
{
    size_t n = strlen(prefix);
    const char *p = text;
    int count = 0;

    while (*p != '\0') {
        if (strncmp(p, prefix, n) == 0) {
            count++;
        }
        p = strchr(p, '\n');
        if (p == NULL) {
            break;
        }
        p++;
    }
    return count;
}

static void
teardown(void)
{
    free(text);
    text = NULL;
}

#define LINE(s) ck_assert_msg(has_line(s), "missing line: %s\n%s", s, text)

START_TEST(values_and_labels)
{
    render(NULL);
    LINE("exgate_upstream_up{upstream=\"deribit\"} 1");
    LINE("exgate_upstream_up{upstream=\"raw\"} 0");
    LINE("exgate_upstream_state{upstream=\"deribit\",state=\"ready\"} 1");
    LINE("exgate_upstream_state{upstream=\"deribit\",state=\"down\"} 0");
    LINE("exgate_upstream_state{upstream=\"raw\",state=\"down\"} 1");
    LINE("exgate_upstream_state_seconds{upstream=\"deribit\"} 12.25");
    LINE("exgate_upstream_info{upstream=\"deribit\",protocol=\"deribit\","
        "reconnect=\"exponential\"} 1");
    LINE("exgate_upstream_connects_total{upstream=\"deribit\"} 3");
    LINE("exgate_upstream_disconnects_total{upstream=\"deribit\","
        "reason=\"lost\"} 1");
    LINE("exgate_upstream_connect_failures_total{upstream=\"deribit\","
        "reason=\"http\"} 4");
    LINE("exgate_upstream_breaker_state{upstream=\"deribit\","
        "state=\"half-open\"} 1");
    LINE("exgate_upstream_breaker_state{upstream=\"raw\",state=\"off\"} 1");
    LINE("exgate_upstream_breaker_trips_total{upstream=\"deribit\"} 1");
    /* big integers stay integers, ms become seconds */
    LINE("exgate_upstream_bytes_in_total{upstream=\"deribit\"} 123456789012");
    LINE("exgate_upstream_last_restore_duration_seconds{upstream=\"deribit\"}"
        " 0.25");
    LINE("exgate_upstream_requests_total{upstream=\"deribit\","
        "outcome=\"outcome_unknown\"} 2");
    LINE("exgate_upstream_requests_in_flight{upstream=\"deribit\"} 2");
    LINE("exgate_listener_clients{listener=\"a\\\"b\\\\c\"} 4");
    LINE("exgate_listener_info{listener=\"a\\\"b\\\\c\",kind=\"tcp\","
        "upstream=\"deribit\"} 1");
    LINE("exgate_listener_slow_consumer_closes_total{listener=\"a\\\"b\\\\c\"}"
        " 1");
    LINE("exgate_client_errors_total 6");
    /* a key the upstream does not report gives no sample */
    ck_assert_int_eq(count_lines("exgate_upstream_channels{"), 1);
    ck_assert_int_eq(count_lines("exgate_upstream_requests_total{"
        "upstream=\"raw\""), 0);
    /* no process object, no process figures */
    ck_assert_int_eq(count_lines("process_"), 0);
    /* the URL and the error text are never exported */
    ck_assert_ptr_null(strstr(text, "HUSH"));
    ck_assert_ptr_null(strstr(text, "wss:"));
}
END_TEST

/* The publisher's requests from edges (/status "publish"."requests"):
   answers by result as one family, held as a gauge, the reader's state. */
START_TEST(publish_requests)
{
    render(NULL);
    LINE("exgate_publish_connected{upstream=\"deribit\"} 1");
    LINE("exgate_publish_requests_total{upstream=\"deribit\","
        "result=\"refused\"} 4");
    LINE("exgate_publish_requests_in_flight{upstream=\"deribit\"} 3");
    LINE("exgate_publish_requests_malformed_total{upstream=\"deribit\"} 1");
    LINE("exgate_publish_requests_edges{upstream=\"deribit\"} 2");
    LINE("# TYPE exgate_publish_requests_answers_total counter");
    LINE("exgate_publish_requests_answers_total{upstream=\"deribit\","
        "result=\"written\"} 9");
    LINE("exgate_publish_requests_answers_total{upstream=\"deribit\","
        "result=\"lost\"} 76");
    LINE("# TYPE exgate_publish_requests_answers_held gauge");
    LINE("exgate_publish_requests_answers_held{upstream=\"deribit\"} 1024");
    LINE("exgate_publish_requests_notices_dropped_total{upstream="
        "\"deribit\"} 1");
    LINE("exgate_publish_requests_waits_total{upstream=\"deribit\"} 5");
    LINE("exgate_publish_requests_reader_connected{upstream=\"deribit\"} 0");
    LINE("exgate_publish_requests_reader_connects_total{upstream="
        "\"deribit\"} 2");
    LINE("exgate_publish_requests_reader_errors_total{upstream=\"deribit\"}"
        " 1");
    ck_assert_int_eq(count_lines("# HELP exgate_publish_requests_answers_"
        "total "), 1);
    /* an upstream without publish has none of them */
    ck_assert_int_eq(count_lines("exgate_publish_requests_answers_held{"
        "upstream=\"raw\""), 0);
    ck_assert_int_eq(count_lines("exgate_publish_requests_"), 14);
}
END_TEST

START_TEST(histogram)
{
    render(NULL);
    LINE("# TYPE exgate_upstream_restore_duration_seconds histogram");
    LINE("exgate_upstream_restore_duration_seconds_bucket{upstream=\"deribit\","
        "le=\"0.005\"} 1");
    LINE("exgate_upstream_restore_duration_seconds_bucket{upstream=\"deribit\","
        "le=\"0.5\"} 2");
    LINE("exgate_upstream_restore_duration_seconds_bucket{upstream=\"deribit\","
        "le=\"+Inf\"} 3");
    LINE("exgate_upstream_restore_duration_seconds_sum{upstream=\"deribit\"}"
        " 0.75");
    LINE("exgate_upstream_restore_duration_seconds_count{upstream=\"deribit\"}"
        " 3");
    ck_assert_int_eq(count_lines(
        "exgate_upstream_restore_duration_seconds_bucket"), 3);
}
END_TEST

/*
 * Every family has one HELP and one TYPE line, before its samples, and
 * its samples follow each other (the format's rule).
 */
START_TEST(families_grouped)
{
    char *copy, *line, *save = NULL;
    char family[128] = "", seen[8192] = " ";
    int samples = 0;

    render(NULL);
    copy = strdup(text);
    for (line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[128], key[132];

        if (strncmp(line, "# HELP ", 7) == 0) {
            sscanf(line + 7, "%127s", name);
            snprintf(key, sizeof(key), " %s ", name);
            ck_assert_msg(strstr(seen, key) == NULL, "%s twice", name);
            ck_assert_uint_lt(strlen(seen) + strlen(key), sizeof(seen));
            strcat(seen, key + 1);
            snprintf(family, sizeof(family), "%s", name);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            sscanf(line + 7, "%127s", name);
            ck_assert_str_eq(name, family);
            continue;
        }
        /* a sample: its name is the family's (plus a histogram suffix) */
        ck_assert_msg(family[0] != '\0' && strncmp(line, family,
            strlen(family)) == 0, "%s outside its family %s", line, family);
        samples++;
    }
    free(copy);
    ck_assert_int_gt(samples, 50);
    /* the four outcomes are one family */
    ck_assert_int_eq(count_lines("# HELP exgate_upstream_requests_total "), 1);
    ck_assert_int_eq(count_lines("exgate_upstream_requests_total{"), 4);
}
END_TEST

START_TEST(process_figures)
{
    json_t *p = xg_metrics_process();
    double start, now = (double) time(NULL);

    ck_assert_int_gt(json_integer_value(json_object_get(p, "open_fds")), 2);
    ck_assert_int_gt(json_integer_value(json_object_get(p,
        "resident_bytes")), 100000);
    ck_assert_int_gt(json_integer_value(json_object_get(p, "max_fds")), 0);
    ck_assert(json_number_value(json_object_get(p, "cpu_seconds")) >= 0);
    start = json_number_value(json_object_get(p, "start_time_seconds"));
    ck_assert_msg(start > now - 600 && start <= now + 1,
        "start %.2f, now %.0f", start, now);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(p,
        "build"), "version")), XG_VERSION);

    render(p);
    LINE("# TYPE process_cpu_seconds_total counter");
    ck_assert_int_eq(count_lines("process_open_fds "), 1);
    ck_assert_int_eq(count_lines("exgate_build_info{version=\"" XG_VERSION
        "\",libevent=\""), 1);
    json_decref(p);
}
END_TEST

static Suite *
metrics_suite(void)
{
    Suite *s = suite_create("xg_metrics");
    TCase *tc = tcase_create("render");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, values_and_labels);
    tcase_add_test(tc, publish_requests);
    tcase_add_test(tc, histogram);
    tcase_add_test(tc, families_grouped);
    tcase_add_test(tc, process_figures);
    suite_add_tcase(s, tc);
    return s;
}

int
main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
