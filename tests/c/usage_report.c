/*
 * Who used what, through libprovd: provd_client_usage grouped by model, its rows, totals
 * and unpriced models read through the accessors, and its refusals (a grouping outside
 * provd_usage_by, a window that ends before it starts, NULL out-pointers).
 *
 *   usage_report SOCKET
 *
 * Prints `info ...`, one `row ...` line per row, `total ...`, one `unpriced MODEL` line
 * per model without a price, then `refusals ok`; exits 1 with the failure's message on
 * the first failure. Frees everything it gets, so valgrind reports no leak.
 */
#include <provd.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fail(const char *what, provd_error *err) {
  provd_str message = {0};
  if (err != NULL) {
    provd_error_message(err, &message);
  }
  fprintf(stderr, "%s failed: %s\n", what, message.data != NULL ? message.data : "(no error)");
  exit(1);
}

#define MUST(call, what)                                                                   \
  do {                                                                                     \
    if ((call) != PROVD_OK) {                                                              \
      fail(what, err);                                                                     \
    }                                                                                      \
  } while (0)

static void print_row(const char *label, const provd_usage_row *row) {
  printf("%s %.*s requests=%llu completed=%llu prompt=%llu completion=%llu", label,
         row->key.data != NULL ? (int)row->key.len : 1,
         row->key.data != NULL ? row->key.data : "-", (unsigned long long)row->requests,
         (unsigned long long)row->completed, (unsigned long long)row->prompt_tokens,
         (unsigned long long)row->completion_tokens);
  if (row->has_cost) {
    printf(" cost=%.6f\n", row->cost);
  } else {
    printf(" cost=-\n");
  }
}

/* A refusal with `expected` status whose message contains `needle`. */
static void expect_refusal(provd_status got, provd_status expected, provd_error *err,
                           const char *needle, const char *what) {
  provd_str message = {0};
  if (got != expected) {
    fprintf(stderr, "%s: got status %d, expected %d\n", what, (int)got, (int)expected);
    exit(1);
  }
  if (err == NULL || provd_error_message(err, &message) != PROVD_OK ||
      strstr(message.data, needle) == NULL) {
    fprintf(stderr, "%s: the message does not say '%s': %s\n", what, needle,
            message.data != NULL ? message.data : "(none)");
    exit(1);
  }
  provd_error_free(err);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: usage_report SOCKET\n");
    return 2;
  }
  provd_error *err = NULL;
  provd_client *client = NULL;
  MUST(provd_client_connect(argv[1], strlen(argv[1]), &client, &err), "connect");

  provd_usage_report *report = NULL;
  MUST(provd_client_usage(client, PROVD_USAGE_DEFAULT_TIME, PROVD_USAGE_DEFAULT_TIME,
                          PROVD_USAGE_BY_MODEL, NULL, 0, &report, &err),
       "usage");
  provd_usage_info info;
  if (provd_usage_report_info(report, &info) != PROVD_OK) {
    fail("usage_report_info", NULL);
  }
  printf("info by=%u rows=%zu priced=%d unpriced=%zu has_uid=%d window_ms=%llu\n", info.by,
         info.rows_len, (int)info.priced, info.unpriced_len, (int)info.has_uid,
         (unsigned long long)(info.until_ms - info.since_ms));
  for (size_t i = 0; i < info.rows_len; i++) {
    provd_usage_row row;
    if (provd_usage_report_row(report, i, &row) != PROVD_OK) {
      fail("usage_report_row", NULL);
    }
    print_row("row", &row);
  }
  provd_usage_row total;
  if (provd_usage_report_total(report, &total) != PROVD_OK) {
    fail("usage_report_total", NULL);
  }
  print_row("total", &total);
  for (size_t i = 0; i < info.unpriced_len; i++) {
    provd_str model;
    if (provd_usage_report_unpriced(report, i, &model) != PROVD_OK) {
      fail("usage_report_unpriced", NULL);
    }
    printf("unpriced %.*s\n", (int)model.len, model.data);
  }
  provd_usage_row beyond;
  if (provd_usage_report_row(report, info.rows_len, &beyond) != PROVD_INVALID_ARGUMENT) {
    fail("a row past the end is refused", NULL);
  }
  provd_usage_report_free(report);

  /* Refusals: each leaves the out-pointer NULL and says why. (The status is kept before
   * `err` is read: C does not order the evaluation of a call's arguments.) */
  report = (provd_usage_report *)&info; /* anything but NULL: the call must clear it */
  provd_status got = provd_client_usage(client, PROVD_USAGE_DEFAULT_TIME,
                                        PROVD_USAGE_DEFAULT_TIME, 42, NULL, 0, &report, &err);
  expect_refusal(got, PROVD_INVALID_ARGUMENT, err, "provd_usage_by", "a grouping outside the enum");
  if (report != NULL) {
    fail("a refused call leaves the report NULL", NULL);
  }
  got = provd_client_usage(client, 2000, 1000, PROVD_USAGE_BY_USER, NULL, 0, &report, &err);
  expect_refusal(got, PROVD_INVALID_REQUEST, err, "since_ms (2000) is after until_ms (1000)",
                 "a window that ends before it starts");
  got = provd_client_usage(client, PROVD_USAGE_DEFAULT_TIME, PROVD_USAGE_DEFAULT_TIME,
                           PROVD_USAGE_BY_USER, NULL, 0, NULL, &err);
  expect_refusal(got, PROVD_NULL_ARGUMENT, err, "report_out", "a NULL out-pointer");
  provd_usage_report_free(NULL);
  printf("refusals ok\n");

  provd_client_free(client);
  return 0;
}
