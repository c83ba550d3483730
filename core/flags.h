/* core/flags.h — table-driven command-line flags.
 *
 * Contract: a program describes its flags once, in a FlagSpec table that
 * points into its own options struct. flags_parse() fills the struct from the
 * defaults and argv, and flags_print_help() prints --help from the same table,
 * so the help text cannot drift from the parser. Syntax follows argparse as
 * Megatron users know it: `--name value`, `--name=value`, store-true switches,
 * list flags that take every following word up to the next `--flag`.
 * Bad input (unknown flag, missing or malformed value, missing required flag)
 * returns an error message naming the flag and the fix; nothing exits here,
 * so a caller under MPI can agree on failure before stopping. */
#ifndef GPT3D_CORE_FLAGS_H
#define GPT3D_CORE_FLAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    FLAG_INT,        /* int */
    FLAG_INT64,      /* int64_t */
    FLAG_DOUBLE,     /* double */
    FLAG_STRING,     /* char * (owned by the options struct after parsing) */
    FLAG_SWITCH,     /* bool, set true when present */
    FLAG_SWITCH_OFF, /* bool, set false when present (e.g. --no-...) */
    FLAG_LIST,       /* StringList: every following word until the next --flag */
} FlagKind;

typedef struct {
    char **items;
    int count;
} StringList;

typedef struct {
    const char *name;     /* without the leading "--" */
    FlagKind kind;
    size_t offset;        /* offsetof(Options, field) */
    const char *default_value; /* NULL: no default (0 / NULL / false) */
    const char *metavar;  /* shown in --help, e.g. "N" or "PATH" */
    const char *help;
    const char *group;    /* --help section */
    bool required;
} FlagSpec;

typedef struct {
    const FlagSpec *specs;
    int count;
    bool *was_set; /* per spec: given on the command line */
    char error[1024];
} FlagParser;

/* Parse argv[1..argc) into `options`. Returns false and fills p->error on bad
 * input; `*wants_help` is set when --help/-h was given (then nothing else is
 * checked). The caller frees with flags_free(). */
bool flags_parse(FlagParser *p, const FlagSpec *specs, int count, void *options, int argc,
                 char **argv, bool *wants_help);

/* For a program's main: parses; on --help prints the help to stdout and
 * returns 0, on bad input prints "error: ..." to stderr and returns 2 (in
 * both cases the options are already freed); returns -1 when the program
 * should go on. */
int flags_parse_main(FlagParser *p, const FlagSpec *specs, int count, void *options, int argc,
                     char **argv, const char *program, const char *summary);

/* True when the flag `name` appeared on the command line. */
bool flags_was_set(const FlagParser *p, const char *name);

void flags_print_help(const FlagSpec *specs, int count, const char *program, const char *summary,
                      FILE *out);

/* Frees the strings and lists the parser stored in `options`. */
void flags_free(FlagParser *p, void *options);

/* Helpers for list values. */
void string_list_free(StringList *l);

#endif
