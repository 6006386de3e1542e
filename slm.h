/* slm.h - v0.7.2 - small language models on the device, in one C header.

   Runs decoder-only transformers (Llama family, Qwen2/3) of 100M-700M
   parameters from one flat, mmap-able `.slm` file. No dependencies beyond
   libc, libm and pthreads.

   USAGE
     In exactly one C or C++ file:
         #define SLM_IMPLEMENTATION
         #include "slm.h"
     Everywhere else just #include "slm.h". Link with -lm (and -pthread
     where libc does not hold pthreads).

         slm_model *model; slm_session *s;
         slm_model_desc md = {0}; md.path = "model.slm";
         if (slm_model_load(&model, &md) != SLM_OK) return 1;
         slm_session_new(&s, model, NULL);            // NULL desc: defaults
         slm_gen_opts opts = {0};                     // zero = greedy
         opts.max_tokens = 64;
         char out[4096]; size_t n;
         slm_generate(s, "Once upon a time", &opts, out, sizeof out, &n);
         printf("%s\n", out);
         slm_session_free(s); slm_model_free(model);

   A LOOP OF YOUR OWN (what slm_generate does, minus stop strings and streaming)

         const slm_model_info *mi = slm_model_info_get(model);
         slm_token t[256], tok; int n, len; slm_result r; const char *piece;
         n = slm_tokenize(model, text, strlen(text), SLM_TOK_BOS | SLM_TOK_SPECIAL, t, 256);
         slm_session_seed(s, seed);             // else every session draws the same numbers
         for (r = slm_eval(s, t, n); r == SLM_OK; r = slm_eval(s, &tok, 1)) {
             tok = slm_sample(s, &opts);        // opts.seed is not read here
             if (tok < 0 || tok == mi->eos || tok == mi->eot) break;
             if (slm_token_type(model, tok) == SLM_TOKEN_CONTROL) break;   // a turn end
             piece = slm_token_piece(model, tok, &len);
             fwrite(piece, 1, (size_t)len, stdout);
         }

     End of text: slm_generate stops at info->eos, info->eot (each -1 when the
     model has none) and the control tokens that close a chat turn
     (<|im_end|>, <|eot_id|>, <|end|>, <end_of_turn>, <|endoftext|>,
     <|end_of_text|>), and writes no text for other control tokens. A control
     token's piece is its text ("<|im_end|>"), so a loop that prints pieces
     checks slm_token_type first, as above.
     slm_tokenize returns 0 both for an empty result and for an error; an error
     is also reported to the model's log callback. A non-empty text always
     gives tokens, so 0 for one means an error: among them a character the
     vocabulary cannot encode (no token, no byte tokens, no unknown token),
     which slm_generate refuses too, naming it. With out NULL and cap 0 it
     returns -(tokens needed) (0 for none): call it once to size the array.

   CONFIGURATION (define before the implementation include)
     SLM_MALLOC(sz) / SLM_FREE(p)   default allocator (malloc/free); both or neither
     SLM_NO_SIMD        force the plain C kernels
     SLM_NO_THREADS     never use more than one thread
     SLM_USE_OPENMP     run passes on OpenMP's threads instead of the library's
                        own pool (needs -fopenmp; see THREADS)
     SLM_NO_STDIO       no file loading (slm_model_desc.data only)
     SLM_STATIC         make every function static to the including file

   SIMD
     Kernels are chosen at compile time from the compiler's predefined macros
     by default: AVX-512 F+BW+VL (+VNNI), else AVX2+FMA+F16C (+AVX-VNNI) on
     x86; NEON (+ the int8 dot product with __ARM_FEATURE_DOTPROD, + the int8
     matrix multiply with __ARM_FEATURE_MATMUL_INT8 for prefill) on aarch64.
     A plain x86 build (no -march or -m flags) runs the scalar kernels: build
     with -march=native, or the flags of the CPUs you ship to (for Intel
     laptops since Alder Lake: -march=x86-64-v3 -mavxvnni).
     SLM_DISPATCH (x86-64, gcc or clang; define it before the implementation
     include) builds a binary for every x86-64 CPU: with the baseline flags it
     also compiles the AVX2+FMA+F16C and AVX-512 F+BW+VL+VNNI kernels (under
     function targets, no -m flags needed) and slm_model_load picks the best
     the CPU and OS run, from CPUID and XCR0 (`make dist` builds slm and
     slm-convert so). slm_model_desc.kernels forces a set ("scalar", "avx2",
     "avx512-vnni"), slm_model_info.kernels names the one a model runs. A
     forced set computes the logits of the native build of that set bit for
     bit when both build with -ffp-contract=off; with the compilers' default
     contraction the native build also fuses a*b+c in the plain C parts of
     the pass (norms, RoPE, softmax) and the last bits differ. On aarch64
     (gcc or clang, -march=armv8-a) it builds "neon" and "neon-dotprod" (the
     int8 dot product under a function target), chosen from the OS's hwcaps
     (Linux, Android: getauxval; Apple: sysctl; elsewhere "neon"). Elsewhere
     (MSVC, 32-bit) SLM_DISPATCH is ignored: the compile-time choice.

   ERRORS
     Functions returning slm_result give SLM_ERR_INVALID_ARG for NULL or
     out-of-range arguments; others return NULL, 0 or -1 as documented;
     *_free(NULL) is a no-op. slm_session_error() keeps the detail of a
     session's last error; a failed load writes it to desc.error.
     The library never aborts, exits or prints; logging goes to a callback.

   MEMORY AND LIFETIMES
     What a model returns (slm_model_info_get and its strings, slm_model_meta
     values, slm_tensor_info.name, slm_token_piece) belongs to the model and
     stays valid until slm_model_free.
     What a session returns belongs to the session: slm_logits until the next
     slm_eval, slm_rewind, slm_branch_keep, slm_session_load or slm_generate
     (slm_eval_branches leaves it alone and writes its logits to the caller's
     buffer), slm_session_error until the next error on that session, both
     at most until slm_session_free.
     slm_result_str and slm_type_name return static strings.
     Strings passed in (path, prompt, stop strings, text) are read during the
     call only; desc.data must outlive the model.
     Every allocation goes through the model's allocator (desc.alloc, else
     SLM_MALLOC/SLM_FREE): slm_model_load, slm_session_new, slm_tokenize
     (scratch for the text), slm_generate and slm_fim (the prompt's tokens,
     the text held back for stop strings), slm_suggest (its search state,
     kept until slm_session_free), the conversation calls (the messages and
     their tokens, kept until slm_conversation_free) and the scoring calls
     (slm_eval_logprobs, slm_score, slm_classify: rows of logits, the tree of
     continuations, tokenizations; all freed before they return, except the
     rows keep_logits asks for, freed by the next slm_eval_logprobs),
     slm_session_save_file and _load_file (a buffer of the state's size,
     freed before they return), slm_session_fork (a session, as
     slm_session_new) and slm_conversation_load (as slm_conversation_new); the
     *_free functions release. slm_eval, slm_eval_branches, slm_branch_keep,
     slm_sample, slm_chat_format, slm_session_save and slm_session_load
     never allocate. When the allocator returns NULL the call fails with
     SLM_ERR_OOM and a message saying "out of memory" (slm_tokenize: 0, and
     the message in the log), frees what it had allocated, and leaves the
     model and the session usable: the same call succeeds once memory is
     there (tests/test_api.c refuses every allocation of a load, session,
     tokenize, generate cycle in turn).
     slm_model_load asks for memory in proportion to the file (a copy of it
     with no_mmap or an unaligned desc.data, tables of at most about twice
     its size) and refuses files whose tensors or sections share bytes. A
     session needs what its dimensions and n_ctx say, which can be far more
     than the file: slm_session_size tells how much before creating it, and
     slm_session_desc.max_bytes caps it. The KV cache (and the other buffers
     that grow with n_ctx) is not written at creation, so where the system
     commits memory lazily a session's resident size grows with the tokens
     evaluated. Nothing relies on zeroed memory: a custom allocator may
     return it uninitialised.

   THREADS
     A slm_model is immutable after load and may be shared by any number of
     threads. A slm_session belongs to one thread at a time.
     The allocator and the log callback are called on the thread that called
     into slm.h, never on its worker threads: they must be thread-safe when
     sessions of one model (or slm_tokenize on one model) run on several
     threads. The log is called by slm_model_load, slm_session_new, a failing
     session call and a failing slm_tokenize.
     A session runs each pass of slm_eval on slm_session_desc.n_threads
     threads (0: every online CPU): the calling thread and the session's own
     pool of pthreads, started by slm_session_new and joined by
     slm_session_free, also in a build with -fopenmp. Results are the same,
     bit for bit, for any thread count. A pool thread that waits (for the
     next pass, or for another thread's part of a step) spins 1024 pauses
     (about 70 us on an AMD EPYC) and then sleeps: an idle session costs no
     CPU, and a thread whose partner the OS set aside for another process
     leaves its core to that partner instead of spinning until it returns.
     SLM_USE_OPENMP (with -fopenmp) runs the passes on OpenMP's threads
     instead, as does a build without pthreads (MSVC with /openmp); they wait
     as libgomp's OMP_WAIT_POLICY and GOMP_SPINCOUNT say, settings of the
     whole process that the library cannot make. bench/under-load.sh on 2
     vCPUs of an AMD EPYC (family 26, Zen 5), SmolLM2-135M-shaped q8_0, tg128
     tokens/s at 2 threads over 1 thread (medians of 6 alternating runs, no
     other jobs): beside one busy loop pinned to a core, pool 0.96 (129.3 /
     134.9), OpenMP 0.68 (95.0 / 138.8); without it, pool 1.38, OpenMP 1.34.
     What the pool's waits cost without the busy loop: 2 threads, pool over
     OpenMP, tg 0.96x, pp128 1.04x (1 thread runs no pool). On that VM kept
     busy by other jobs (load average 5.6-8), beside the busy loop: pool
     1.30, OpenMP 0.72.

   PREDICTIVE TEXT
     slm_suggest(s, text, out, n, &opts) returns the words that complete what
     was typed so far ("girl" for "...a little gi"), most probable first, with
     their probability: call it after every keystroke with the whole text, on
     a session of its own. A word is a run of letters, digits, ' and U+2019.
     Token healing: the tokens that spell the current word, and then any
     token that a longer token could extend into what follows it (the space
     in "a little "), are taken back, so that the search spells the typed
     characters with the tokens the model would have used. For a candidate w,
         prob(w) = P(what follows the context starts with the typed tail, the
                     rest of w and a non-word character)
                   / P(what follows starts with the typed tail),
     summed over every token path (opts.n_words > 1: a phrase of that many
     words). The search expands the likeliest paths first, eight per forward
     pass (slm_eval_branches), and leaves out paths that can neither enter
     the top n nor change a reported probability by more than about 1e-4 of
     it; a node keeps its 512 likeliest children (the mass of the others
     still counts in the denominator); candidates below min_prob (0: 0.01)
     are not looked for, nor paths that could only reach the n-th place (or
     min_prob) if their word ended likelier than any word end the session's
     searches have seen so far (after 32 evaluated nodes; a trained model
     soon sees one near 1, a flat distribution is spared many passes); one
     call makes at most 64 passes. The session keeps
     its tokens and the search tree: a keystroke that extends the text
     evaluates only the tokens that changed and the nodes the longer word
     needs; one that ends a word whose node was evaluated moves that node
     into the context without a pass (slm_branch_keep). slm_session_stats
     counts the tokens and passes (n_evaluated, n_passes). A text whose
     tokens do not fit in n_ctx (with a quarter of it left for the search)
     is read from its last n_ctx / 2 tokens; later calls keep that start
     while the text fits. Past the context a call tokenizes only the text
     after a space between two letters some 8 x n_ctx bytes before its end
     (moved when the window moves), whose tokens are the whole text's there
     (slm__sug_cuttable says for which tokenizers; others tokenize it all),
     so a keystroke's cost does not grow with the text. The state (about
     26 rows of n_vocab floats, 5 MB for a 49152-token vocabulary, and the
     tree) is allocated by the first call and freed with the session. Invalid UTF-8 and bad options
     return -SLM_ERR_INVALID_ARG; a cancel callback -SLM_ERR_CANCELLED.

   SAVED SESSIONS
     slm_session_save(s, buf, cap, &size) writes what s's cache holds (and
     what slm_sample needs: the last logits, the random state) to memory;
     slm_session_load(t, buf, size) puts it into any session t on the same
     model with the same kv_type whose n_ctx holds its tokens, replacing
     what t held: t then continues exactly, bit for bit, as s would have
     (any thread count). A load checks everything first (size, checksum,
     model, KV type, n_ctx) and on an error leaves t as it was.
     slm_session_fork(&t, s) is a new session holding a copy of s. Not
     kept: the branch tree, slm_suggest's search, slm_eval_logprobs' kept
     rows. A conversation is saved beside its session
     (slm_conversation_save, slm_conversation_load on the restored session).
     The format is in the header next to slm_session_save. On 2 vCPUs of an
     AMD EPYC (Zen 5), 1024 tokens of a SmolLM2-135M-shaped q8_0 model, f16
     KV (a 23.8 MB state), 1 thread, medians of 5 beside other jobs (load
     average 6): slm_session_load 14 ms (_load_file 20 ms), against 11.8 s
     to evaluate the tokens again, 850x (bench/session-restore.c).

   GRAMMARS
     slm_grammar_new compiles llama.cpp's GBNF: rules "name ::= alternatives"
     (names of a-z A-Z 0-9 -), alternatives by |, sequences, groups ( ),
     repetitions * + ? {m} {m,} {m,n} (m, n <= 2000; rewritten as
     right-recursive rules, as llama.cpp does), string literals "...",
     classes [a-z...], negated [^...], the any character ., escapes \n \r
     \t \\ \" \[ \] \- \xHH \uHHHH \UHHHHHHHH (code points, U+10FFFF at
     most, no surrogates), comments # to the end of the line. A rule ends at
     a newline, except after ::= or | and inside parentheses. Characters are
     Unicode code points matched as their UTF-8 bytes; . and negated classes
     match any code point but the excluded ones and the surrogates. Token
     references (<...>, !<...>) are refused. The start rule is desc.root
     (default "root"). SLM_ERR_INVALID_ARG, the message "line L, column C:
     ..." (1-based; the column counts bytes) for: text that does not parse
     or is not valid UTF-8, a rule used but never defined (at the first
     use), a rule defined twice (llama.cpp keeps the last definition), a
     missing start rule, and, on every rule
     (used from the start rule or not, as llama.cpp checks undefined ones):
     a rule that matches no finite string and a left-recursive rule, with its
     cycle ("rule 'expr' is left-recursive: expr -> term -> expr"; groups
     and repetitions are parts of the rule they are written in). Limits,
     each an error naming it: 1 MB of text, 200 nested parentheses, 2^20
     elements, 65536 rules, 65536 distinct byte sets.

     What a grammar guarantees (slm_gen_opts.grammar, in slm_generate,
     slm_chat and slm_fim): the text delivered (out, on_token) is always a
     prefix of a sentence of the language, matched byte by byte from the
     first generated byte (the prompt is not matched). Before each draw the
     tokens whose piece would leave the language are no candidates (after
     the repetition penalty, before temperature, top-k, top-p and min-p), so
     the others keep their relative odds; a token that ends mid-character is
     allowed when its bytes can start one the grammar accepts. End tokens
     (eos, eot, chat turn ends) are allowed only when the text is a whole
     sentence; other control tokens, the unknown token and empty pieces,
     never. When the text is a whole sentence that no byte can extend,
     generation ends at once with SLM_STOP_END_OF_TEXT. A stop string still
     ends the text, even mid-sentence (what comes before it is delivered);
     max_tokens, on_token and a full context cut it: the text is then a
     prefix. stop_reason tells which: SLM_STOP_END_OF_TEXT is a whole
     sentence. When no token of the vocabulary continues the text (a
     vocabulary without byte tokens; or a grammar that wants a leading space
     right after an empty prompt on a SentencePiece model, whose first piece
     loses its space), slm_generate returns SLM_ERR_INVALID_ARG with
     stop_reason SLM_STOP_ERROR and "grammar: no token of the vocabulary
     continues the text after N tokens", the text so far delivered.
     slm_sample refuses a grammar (-1 and a message): the parse state lives
     in the generating calls.
     Cost: the parse state is llama.cpp's set of stacks, over bytes; each
     (state, byte) step is worked out once per call, and a state's token
     mask (a walk of a trie of the vocabulary's pieces that leaves a dead
     prefix at once) is kept per state, since JSON comes back to the same
     states; a greedy draw whose likeliest token is allowed needs no mask.
     The trie is made by a session's first call with a grammar and freed
     with the session (about 1.6 MB for 49152 tokens); the rest lives for
     the call, its caches emptied whenever they pass 48 MB. README.md has
     the measured cost (bench/grammar.sh): within the noise of a free token.
     A grammar so ambiguous that more than 4096 parse stacks live at once
     (or a million within one token) fails the call with
     SLM_ERR_INVALID_ARG ("too ambiguous") instead of running away.
     A slm_grammar is never written after slm_grammar_new: any number of
     sessions on any threads may use one at once.
     slm_grammar_json() is GBNF for any JSON value with whitespace bounded as
     llama.cpp's grammars/json.gbnf bounds it (after a token: nothing, one
     space, or a newline and at most 20 spaces or tabs) and numbers of at
     most 16 digits per part, so that every value ends.

   JSON Schema
     slm_json_schema_to_gbnf writes llama.cpp's grammar for a schema (its
     converter's rules and layout): compact JSON whose whitespace is its
     bounded `space` rule (none, " ", or 1-2 newlines and up to 20 spaces
     or tabs) after '{' '[' ',' ':' and a name, before '}' ']', so output
     always ends. Properties come in the schema's order, the required ones
     first, then any in-order subset of the optional ones. Supported: type
     (or a list of types), properties, required, additionalProperties
     (beside properties: absent or false, no other name, as llama.cpp;
     alone: true/absent any object, a schema any names, false {}), items,
     minItems, maxItems (<= 1000), enum, const, $ref to the root's
     #/$defs/NAME or #/definitions/NAME (recursion that can end), boolean
     schemas; description, title, $schema, $id, $comment, default and
     examples are ignored. Any other keyword, and a schema nothing
     satisfies (minItems > maxItems, an empty enum, a value "type"
     excludes, a required name not in properties, a $ref to nothing or a
     cycle that cannot end), is SLM_ERR_INVALID_ARG naming it and its
     JSON Pointer: "unsupported keyword 'pattern' at /properties/name".
     The JSON is read strictly (RFC 8259, no duplicate names, valid UTF-8,
     64 levels, 16 MiB), errors with line and column.

   LIMITATIONS
     No Jinja: chat templates are the built-in formatters (slm_chat_format),
     chosen by slm-convert from the checkpoint's template text.
     Little-endian hosts only: on a big-endian one slm_model_load returns
     SLM_ERR_UNSUPPORTED (the header compiles everywhere), for a file, a
     tokenizer-only file or desc.data alike, and slm-convert refuses to run.
     32-bit hosts (i386: tested under qemu-i386) run what fits in their
     address space: slm_model_load refuses a file larger than it
     (SLM_ERR_UNSUPPORTED, "too large for this address space"), and so does
     a build without large-file support (_FILE_OFFSET_BITS=64) for any file
     of 2 GiB or more (open's EOVERFLOW); slm_session_size gives SLM_ERR_OOM
     beyond 2 GiB. The file is mapped whole (a 2 GiB file maps under
     qemu-i386, a 3 GiB one does not: SLM_ERR_IO, "not enough address
     space") and a session comes on top of it: a model of about 1.5 GiB (a
     700M-parameter one in q8_0 or q4_k, a 360M one in f16) is the largest
     that leaves a session room (less on a 32-bit kernel, whose processes
     have 3 GiB; not measured on real hardware). On 32-bit x86, build with
     SSE2 float math (-msse2 -mfpmath=sse, which -march=native does not
     imply there): on the x87 unit (the default of -m32) results are right
     to float precision but not the same bit for bit across kernels and
     thread counts, as the tests expect.

   REVISION HISTORY
     0.7.3  slm_suggest tokenizes a text past the context from a cut near
            its end, not whole (stories260K, n_ctx 512: 3.5-4.2 ms a
            keystroke at 20 and 60 KB of text, was 7.4 and 19.9 ms);
            suggestions unchanged. A first call with an empty text on a
            model without BOS no longer passes memcpy a null pointer.
     0.7.2  slm_suggest: eight nodes per pass, the spare places taken by
            prefixes of the nodes taken; a word that could reach the bar
            only by ending likelier than any word end the session has seen
            is not looked for; a node's children selected through a
            histogram and normalised by the vectorised softmax. SmolLM2-135M
            shape (random weights), q8_0: 0.58 passes a keystroke (was
            0.86), latency p50 1.09x and p99 4.26x a decode step (were 1.54x
            and 9.63x); stories260K's keystroke savings unchanged.
     0.7.1  x86 decode prefetches weights with the T0 hint, not
            non-temporal: 1.5-3x faster one- and two-thread decode of q8_0,
            q4_0, q6_K and the K-quant mixes on an Intel Xeon (model 207).
            Same results.
     0.7.0  AVX-512 VNNI: q4_K prefill by a 16-row GEMM (super-blocks
            repacked rows-in-lanes once per batch, vpdpbusd on tiles of 8
            tokens; the row-group kernel sums the same exact integers, so a
            token's logits have the same bits alone or in a batch); q8_K
            activations quantized in AVX-512; q6_K in one kernel body, its
            decode reading rows in order. Attention scores 16 (AVX2: 8)
            positions per call, reduced together (same bits as before);
            AVX-512 value sums for up to four heads at once. A pass computes
            q, k and v by heads with their bias, norm, RoPE and KV store in
            one step; the SwiGLU up projection in chunks on the thread's stack
            (the session's hb2 buffer is gone); KV f16 stores vectorised
            (F16C, AVX-512, NEON; NaN lanes by the scalar conversion, so the
            same bits). Same file format.
     0.6.0  SLM_DISPATCH on aarch64: the NEON kernels with and without the
            dot product in one build, chosen from the OS's hwcaps (Linux
            getauxval, Apple sysctl); `make dist` there too. aarch64 i8mm:
            an smmla GEMM for the _R16 types' prefill (neon-i8mm, with
            __ARM_FEATURE_MATMUL_INT8; correct under qemu, speed unmeasured).
            AVX-512 VNNI: q4_K and q6_K matrices in groups of four rows
            (each row's blocks decoded once for every token, every line
            prefetched). Prefetch distances retuned on Zen 5 (decode 1.1-1.6x
            on one thread), and attention prefetches the KV rows of a short
            pass. Same results, same file format.
     0.5.0  SLM_DISPATCH: one x86-64 build with the plain C, AVX2 and AVX-512
            VNNI kernels, chosen at slm_model_load from CPUID (see SIMD);
            slm_model_desc.kernels forces one, slm_model_info.kernels names
            it. `make dist`. Windows: builds with MinGW-w64 (Win32 threads,
            UTF-8 paths through the wide API, the console for the typing
            demo and chat). AVX-VNNI kernels (avx2-vnni: -mavxvnni without
            AVX-512); AVX-512 VNNI's _R16 GEMM takes 8 tokens a pass, and
            AVX-512 builds have grouped attention kernels. e^x is a
            polynomial of slm.h's own (the same bits on every instruction
            set), and softmax, SiLU and RMSNorm are vectorised on it: logits
            move in their last bits against 0.4.0. New tensor type q5_0_r16
            (1030): slm-convert interleaves q5_0 matrices (the fallback
            rows of Q4_K_M mixes) by default; the file format stays 1.1, and
            a 0.4.0 reader refuses such a file naming the type.
     0.4.0  Sessions: slm_session_save/_load and _save_file/_load_file keep a
            session's state (tokens, KV rows, last logits, random state) in a
            versioned, checksummed blob tied to the model's header and tensor
            directory; slm_session_fork copies a session; slm_conversation_save
            /_load keep a conversation's messages and reply ids. slm chat
            --save F / --load F. See SAVED SESSIONS.
            Grammars: slm_grammar_new/_free compile llama.cpp's GBNF or a
            JSON Schema subset (slm_json_schema_to_gbnf), slm_grammar_json
            is the built-in JSON grammar, slm_gen_opts.grammar constrains
            slm_generate, slm_chat and slm_fim (see GRAMMARS); slm_sample
            refuses a grammar. 32-bit builds: a file beyond the address
            space is SLM_ERR_UNSUPPORTED with the reason, not an I/O error or
            an allocation storm (see LIMITATIONS). File format unchanged.
     0.3.0  Predictive text: slm_suggest (token healing, a search over
            token paths in branch batches, reuse across keystrokes; see
            PREDICTIVE TEXT) and slm_word_char. Branch batches:
            slm_eval_branches, slm_branch_count, slm_branch_keep (the value
            kernels take an accumulate flag). slm_gen_stats.n_evaluated and
            n_passes count every pass of a session. Conversations:
            slm_conversation_new/_get/_free, slm_chat, slm_chat_undo,
            slm_chat_reset; fill-in-the-middle: slm_fim_tokens, slm_fim and
            slm_model_info's fim_* ids. Scoring: slm_eval_logprobs,
            slm_logits_row, slm_score, slm_classify. Types q4_k, q5_k, q6_k,
            q5_0 and q5_1 (file format 1.1), with kernels for every SIMD set;
            a 1.0 file still loads.
     0.2.0  API: slm_session_seed() seeds a hand-written slm_sample loop
            (slm_generate calls it with opts.seed: same seed, same text as
            0.1.0); slm_session_size() and slm_session_desc.max_bytes bound a
            session's memory; contracts and limitations written above.
            Configuration: SLM_MALLOC without SLM_FREE (or the reverse) is an
            #error; SLM_REALLOC and SLM_ASSERT, never used, are gone; a half-set
            slm_allocator is SLM_ERR_INVALID_ARG; threads are the library's own
            pool (spin, then sleep) even with -fopenmp, SLM_USE_OPENMP selects
            OpenMP's.
            Hostile input: the sampler is total (NaN/inf logits never drawn;
            none finite: slm_sample -1, slm_generate SLM_ERR_FORMAT with
            SLM_STOP_ERROR and "non-finite logits"; temperature < 1e-6 is
            greedy; NaN/inf options refused); slm_model_load refuses tensors
            that overlap each other or a section, duplicate tensor names,
            unused tensors (a warning in a newer minor format version) and
            paths that are not regular files, and logs every failure;
            slm_session_new no longer touches the KV cache before it is used;
            a character the vocabulary cannot spell is an error, not dropped
            (SentencePiece: one unknown token per character, was per byte);
            special tokens are matched in time independent of their number;
            slm_generate returns SLM_ERR_OOM when tokenizing the prompt runs
            out of memory (it said "empty prompt").
     0.1.0  first release: Llama, Qwen2 and Qwen3 from .slm files (f32, f16,
            bf16, q8_0, q4_0, 16-row interleaved q8_0/q4_0), SentencePiece and
            byte-level BPE tokenizers, AVX2, AVX-512 and NEON kernels, f32, f16
            and q8_0 KV caches, built-in chat formatters.

   LICENCE: MIT, see the end of this file.
*/
#ifndef SLM_H
#define SLM_H

#define SLM_VERSION_MAJOR        0
#define SLM_VERSION_MINOR        7
#define SLM_VERSION_PATCH        3
#define SLM_VERSION_STRING       "0.7.3"
#define SLM_FORMAT_VERSION_MAJOR 1 /* .slm files this code writes and reads */
#define SLM_FORMAT_VERSION_MINOR 1

#include <stddef.h>
#include <stdint.h>

#if defined(SLM_STATIC) && (defined(__GNUC__) || defined(__clang__))
#define SLM_API __attribute__((unused)) static /* the includer may not call every function */
#elif defined(SLM_STATIC)
#define SLM_API static
#else
#define SLM_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t slm_token;

typedef enum slm_result {
    SLM_OK = 0,
    SLM_ERR_IO,           /* a file could not be opened, read or mapped */
    SLM_ERR_FORMAT,       /* the model file is malformed or truncated */
    SLM_ERR_UNSUPPORTED,  /* valid, but this build cannot run it */
    SLM_ERR_OOM,          /* an allocation failed */
    SLM_ERR_INVALID_ARG,  /* NULL or out-of-range argument */
    SLM_ERR_CONTEXT_FULL, /* the tokens do not fit in the session's context */
    SLM_ERR_CANCELLED     /* the on_token callback asked to stop */
} slm_result;

/* Tensor types, numbered as in GGML/GGUF. The _R16 types hold the same blocks
   as q4_0/q5_0/q8_0 with 16 rows interleaved (FORMAT.md), so that one SIMD load
   reaches 16 rows at once: slm-convert writes them for matrices whose row
   count is a multiple of 16. Their number is 1024 + that of their block type.
   The K-quants (Q4_K, Q5_K, Q6_K: blocks of 256) and Q5_0/Q5_1 (blocks of 32,
   which llama-quantize's K-quant mixes use for rows that are not a multiple
   of 256) have GGML's block layouts, so GGUF files import them as a copy
   (format 1.1). */
typedef enum slm_type {
    SLM_TYPE_F32 = 0,
    SLM_TYPE_F16 = 1,
    SLM_TYPE_Q4_0 = 2,
    SLM_TYPE_Q5_0 = 6,
    SLM_TYPE_Q5_1 = 7,
    SLM_TYPE_Q8_0 = 8,
    SLM_TYPE_Q4_K = 12,
    SLM_TYPE_Q5_K = 13,
    SLM_TYPE_Q6_K = 14,
    SLM_TYPE_BF16 = 30,
    SLM_TYPE_Q4_0_R16 = 1026,
    SLM_TYPE_Q5_0_R16 = 1030,
    SLM_TYPE_Q8_0_R16 = 1032
} slm_type;

typedef enum slm_arch { SLM_ARCH_LLAMA = 1, SLM_ARCH_QWEN2 = 2, SLM_ARCH_QWEN3 = 3 } slm_arch;
typedef enum slm_tokenizer_kind { SLM_TOKENIZER_SPM = 1, SLM_TOKENIZER_BPE = 2 } slm_tokenizer_kind;

/* How byte-level BPE splits text into words before merging (FORMAT.md, tokenizer.pre). */
typedef enum slm_pretok {
    SLM_PRETOK_NONE = 0,
    SLM_PRETOK_GPT2 = 1,     /* 's|'t|... ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    SLM_PRETOK_LLAMA3 = 2,   /* (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|... */
    SLM_PRETOK_QWEN2 = 3,    /* as LLAMA3 with single digits \p{N} */
    SLM_PRETOK_STARCODER = 4 /* digits split one by one, then GPT2 */
} slm_pretok;

/* Built-in chat formatters (FORMAT.md, tokenizer.chat_template). */
typedef enum slm_chat_template {
    SLM_CHAT_NONE = 0,
    SLM_CHAT_CHATML = 1,
    SLM_CHAT_LLAMA2 = 2,
    SLM_CHAT_LLAMA3 = 3,
    SLM_CHAT_PHI3 = 4,
    SLM_CHAT_GEMMA = 5,
    SLM_CHAT_ZEPHYR = 6
} slm_chat_template;

/* Token types, numbered as in GGUF. */
enum {
    SLM_TOKEN_NORMAL = 1,
    SLM_TOKEN_UNKNOWN = 2,
    SLM_TOKEN_CONTROL = 3,
    SLM_TOKEN_USER_DEFINED = 4,
    SLM_TOKEN_UNUSED = 5,
    SLM_TOKEN_BYTE = 6
};

/* slm_tokenize flags */
enum {
    SLM_TOK_BOS = 1, /* add the special tokens the model's tokenizer adds (BOS for most) */
    SLM_TOK_SPECIAL = 2
}; /* recognise control tokens written as text, e.g. "<|im_end|>";
                                 user-defined tokens are always recognised */

enum { SLM_LOG_ERROR = 0, SLM_LOG_WARN = 1, SLM_LOG_INFO = 2, SLM_LOG_DEBUG = 3 };

/* Both functions or neither (all zero: SLM_MALLOC / SLM_FREE); slm_model_load
   refuses one without the other. Must be thread-safe when sessions of one
   model run on several threads. */
typedef struct slm_allocator {
    void *(*alloc)(size_t size, void *user);
    void (*free)(void *ptr, void *user);
    void *user;
} slm_allocator;

/* level is SLM_LOG_*; message is valid during the call only. Called on the
   thread that called into slm.h: must be thread-safe when sessions of one
   model run on several threads. */
typedef void (*slm_log_fn)(void *user, int level, const char *message);

typedef struct slm_model slm_model;
typedef struct slm_session slm_session;
typedef struct slm_grammar slm_grammar;

/* ---- models ------------------------------------------------------------ */

typedef struct slm_model_desc {
    const char *path; /* a .slm file (on POSIX a regular file: a FIFO or */
                      /* a device is SLM_ERR_IO at once, not a wait) ... */
    const void *data; /* ... or the file's bytes in memory (kept by the    */
    size_t size;      /*     caller until slm_model_free); one of the two  */
    int no_mmap;      /* read the file into memory instead of mapping it  */
    slm_allocator alloc;
    slm_log_fn log;
    void *log_user;
    char *error; /* optional: why a load failed, NUL-terminated      */
    size_t error_cap;
    /* The kernel set to run (see SIMD at the top): NULL or "" for the best
       this build has for this CPU. A build with SLM_DISPATCH has "scalar",
       "avx2" and "avx512-vnni" (x86-64) or "neon" and "neon-dotprod"
       (aarch64) and refuses (SLM_ERR_UNSUPPORTED) one the CPU cannot run;
       any other build has only its own (slm_model_info.kernels).
       For tests and benchmarks: nothing else reads an environment variable. */
    const char *kernels;
} slm_model_desc;

typedef struct slm_model_info {
    int arch;              /* slm_arch */
    const char *arch_name; /* "llama", "qwen2", "qwen3" */
    int n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, max_seq;
    float rope_theta, rope_freq_scale, norm_eps;
    int rope_kind; /* 0 adjacent pairs, 1 NeoX halves */
    int tied_embeddings, qkv_bias, qk_norm;
    int weight_type; /* slm_type of most matrix weights (the block type for
                                _R16 layouts); -1 for a vocab-only file */
    uint64_t n_params;
    uint64_t file_size;
    int n_tensors;
    int format_major, format_minor;
    int tokenizer_kind;                /* slm_tokenizer_kind */
    int n_tokens;                      /* tokenizer entries (<= n_vocab) */
    slm_token bos, eos, eot, pad, unk; /* -1 when absent */
    int add_bos;
    int chat_template;
    const char *name; /* metadata "name", or "" */
    /* fill-in-the-middle control tokens (slm_fim), -1 when absent: prefix,
       suffix, middle, padding, repository name, file separator */
    slm_token fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    const char *kernels; /* the kernel set this model runs: "avx2", "neon-dotprod", "neon-i8mm", "scalar"... */
} slm_model_info;

typedef struct slm_tensor_info {
    const char *name;
    int type; /* slm_type */
    int n_dims;
    int64_t ne[4];
    uint64_t offset, size; /* in the file */
} slm_tensor_info;

SLM_API slm_result slm_model_load(slm_model **out, const slm_model_desc *desc);
SLM_API void slm_model_free(slm_model *model);
SLM_API const slm_model_info *slm_model_info_get(const slm_model *model);
SLM_API slm_result slm_model_tensor_get(const slm_model *model, int index, slm_tensor_info *out);
/* A metadata value ("name", "source", "license"...), or NULL. */
SLM_API const char *slm_model_meta(const slm_model *model, const char *key);

/* ---- sessions ---------------------------------------------------------- */

typedef struct slm_session_desc { /* zero = default */
    int n_ctx;                    /* context length; 0 = min(model max_seq, 4096) */
    int n_threads;                /* 0 = all processors (1 without threads) */
    int kv_type;                  /* KV cache: 0 = default (f32 for float models, f16 for quantized ones),
                         SLM_TYPE_F32, SLM_TYPE_F16 or SLM_TYPE_Q8_0 (half of f16's memory) */
    char *error;                  /* optional: why slm_session_new failed, NUL-terminated */
    size_t error_cap;
    size_t max_bytes; /* 0 = no cap; else slm_session_new fails with SLM_ERR_OOM (and the size
                         in the message) when the session would need more (slm_session_size) */
} slm_session_desc;

typedef enum slm_stop_reason {
    SLM_STOP_NONE = 0,
    SLM_STOP_END_OF_TEXT,
    SLM_STOP_MAX_TOKENS,
    SLM_STOP_STRING,
    SLM_STOP_CANCELLED,
    SLM_STOP_CONTEXT_FULL,
    SLM_STOP_ERROR
} slm_stop_reason;

typedef struct slm_gen_stats { /* what the last slm_generate did */
    int n_prompt;              /* prompt tokens */
    int n_cached;              /* of those, already in the cache and not evaluated again */
    int n_generated;           /* tokens sampled */
    int stop_reason;           /* slm_stop_reason */
    /* not reset by slm_generate: tokens evaluated by every call on this
       session since slm_session_new (slm_eval, slm_generate, slm_eval_branches,
       slm_suggest), and the forward passes that evaluated them (each reads
       the weights once): the cost of a call is the difference across it */
    int64_t n_evaluated, n_passes;
} slm_gen_stats;

SLM_API slm_result slm_session_new(slm_session **out, const slm_model *model, const slm_session_desc *desc);
/* The bytes slm_session_new(model, desc) would request from the model's
   allocator, summed over all its requests (KV cache, activations, scratch),
   exactly, for the same desc and thread count (desc NULL = defaults; n_threads
   0 resolves as slm_session_new does at the time of the call). desc->max_bytes
   is not applied here. Errors are slm_session_new's, with the message in
   desc->error: SLM_ERR_INVALID_ARG, SLM_ERR_UNSUPPORTED (a tokenizer-only
   file), SLM_ERR_OOM when the size exceeds half the address space (*bytes is
   then SIZE_MAX). */
SLM_API slm_result slm_session_size(const slm_model *model, const slm_session_desc *desc, size_t *bytes);
SLM_API void slm_session_free(slm_session *session);
SLM_API const char *slm_session_error(const slm_session *session); /* "" when none */
SLM_API int slm_session_n_past(const slm_session *session);        /* tokens in the KV cache, -1 on NULL */
SLM_API int slm_session_n_ctx(const slm_session *session);         /* -1 on NULL */
SLM_API slm_result slm_session_stats(const slm_session *session, slm_gen_stats *out);

/* ---- saved and forked sessions ------------------------------------------

   A session's state (what its KV cache holds: the tokens, their keys and
   values, the logits of the last position when valid, the sampler's random
   state and the last sampled token) as one little-endian blob, so that an app
   can stop and later continue a conversation, or try several continuations of
   one prefix, without evaluating the tokens again. Format (version 1.0):
       u8[4] "SLMS", u16 major 1, u16 minor 0, u64 blob size,
       u64 model hash (of the .slm file's header and tensor directory),
       u32 kv_type, n_ctx, n_past, n_layers, n_kv_heads, kv_head_bytes,
       n_vocab, flags (bit 0: logits present), u64 rng, i32 gen_last, u32 0,
       i32 tokens[n_past], keys then values: [layer][pos < n_past][kv head]
       rows of kv_head_bytes as the cache stores them, f32 logits[n_vocab]
       when bit 0, u64 checksum (of every byte before it).
   A load checks the size, version, checksum, model, KV type and that n_past
   fits before it touches the session: on any error the session is as it was
   (except slm_session_error), so the blob may be hostile input. Not saved
   (dropped by a load, not copied by a fork): the branch tree of
   slm_eval_branches, slm_suggest's search state, slm_eval_logprobs' kept
   rows, and slm_gen_stats (a load clears it). A conversation lives outside
   the session: slm_conversation_save keeps its messages. */

/* Writes the state into buf: *size gets its exact size (what was written, or
   with buf NULL and cap 0, what would be). SLM_ERR_INVALID_ARG when cap is
   short (*size still says what it needs). The calls that take a const
   session (save, save_file, fork) still write a failure's detail to its
   slm_session_error; nothing else of it changes. */
SLM_API slm_result slm_session_save(const slm_session *session, void *buf, size_t cap, size_t *size);
/* Restores a state saved from a session on the same model (told by a hash
   of the .slm file's header and tensor directory: another shape, metadata or
   tensor layout is SLM_ERR_INVALID_ARG "saved from another model"; two files
   that differ in their weights only are not told apart) with the same
   kv_type, into a session whose n_ctx
   holds its n_past tokens (n_ctx itself may differ: results do not depend on
   it, nor on n_threads). What was in the session is replaced: slm_logits,
   slm_sample and slm_generate then continue exactly as the saved session
   would have. Truncated or corrupted data, or a newer format version:
   SLM_ERR_FORMAT (SLM_ERR_UNSUPPORTED for the version). */
SLM_API slm_result slm_session_load(slm_session *session, const void *data, size_t size);
/* The same through a file (written whole, replacing it); SLM_ERR_IO when it
   cannot be opened, read or written. The blob is built in memory first (the
   session's allocator), so saving needs its size once more. SLM_NO_STDIO:
   SLM_ERR_UNSUPPORTED. */
SLM_API slm_result slm_session_save_file(const slm_session *session, const char *path);
SLM_API slm_result slm_session_load_file(slm_session *session, const char *path);
/* A new, independent session on the same model with the same n_ctx,
   n_threads, kv_type and max_bytes, holding a copy of the state (plus the
   stats): each continues exactly as the original would. *out is the caller's
   to slm_session_free. The branch tree is not copied. */
SLM_API slm_result slm_session_fork(slm_session **out, const slm_session *session);

/* ---- grammars ---------------------------------------------------------- */

/* Constrained generation: a grammar in llama.cpp's GBNF, or a JSON Schema
   (converted to GBNF), compiled once and passed in slm_gen_opts.grammar.
   See GRAMMARS at the top. */
typedef struct slm_grammar_desc { /* set one of gbnf and json_schema */
    const char *gbnf;             /* grammar text in llama.cpp's GBNF ... */
    const char *json_schema;      /* ... or a JSON Schema (the subset in GRAMMARS) */
    const char *root;             /* the start rule; NULL = "root" */
    slm_allocator alloc;          /* zero = SLM_MALLOC / SLM_FREE */
    char *error;                  /* optional: why it failed, e.g. "line 3, column 7: ..." */
    size_t error_cap;
} slm_grammar_desc;

/* Compiles a grammar. If this returns SLM_OK, call slm_grammar_free. A
   grammar is never changed after this: one may serve any number of sessions
   and calls at once, on any threads. SLM_ERR_INVALID_ARG (with the message
   in desc->error) for a grammar or schema that does not parse, a rule that
   is undefined, can never match or is left-recursive; SLM_ERR_OOM. */
SLM_API slm_result slm_grammar_new(slm_grammar **out, const slm_grammar_desc *desc);
SLM_API void slm_grammar_free(slm_grammar *grammar);
/* The built-in JSON grammar, GBNF text: any JSON value, whitespace bounded. */
SLM_API const char *slm_grammar_json(void);
/* A JSON Schema as GBNF text (what slm_grammar_new compiles for
   desc.json_schema). out and out_len as slm_generate's. SLM_ERR_INVALID_ARG
   with the reason in error (may be NULL): JSON that does not parse, an
   unsupported keyword (named), a schema no document satisfies. */
SLM_API slm_result slm_json_schema_to_gbnf(const char *schema, char *out, size_t out_cap, size_t *out_len, char *error,
                                           size_t error_cap);

/* ---- generation -------------------------------------------------------- */

/* Every float option must be a finite number: NaN or +-inf is refused
   (SLM_ERR_INVALID_ARG, slm_sample -1), as is any other value out of the
   ranges below. */
typedef struct slm_gen_opts { /* zero-initialised = greedy, no limits */
    int max_tokens;           /* 0 = until end of text or a full context */
    float temperature;        /* < 1e-6 (0, negative): greedy (argmax); a huge one is nearly uniform */
    int top_k;                /* 0 or >= n_vocab = off */
    float top_p;              /* 0 or >= 1 = off; negative refused */
    float min_p;              /* 0 = off, 1 = only the likeliest (and its ties); outside [0, 1] refused */
    float repeat_penalty;     /* 0 or 1 = off; < 1 favours recent tokens; negative refused */
    int repeat_last_n;        /* tokens the penalty looks back; 0 = 64 */
    uint64_t seed;            /* 0 = a fixed default: same seed, same text */
    const char *const *stop;  /* stop strings: generation ends before them */
    int n_stop;
    int (*on_token)(void *user, const char *piece, int len); /* non-zero = stop */
    void *user;
    /* NULL = free text; else the text is always a prefix of a sentence of the grammar's language, a whole
       one when stop_reason is SLM_STOP_END_OF_TEXT (GRAMMARS at the top). Shared, read only, by any calls. */
    const slm_grammar *grammar;
} slm_gen_opts;

/* Evaluates the prompt (with BOS when the model wants one; control tokens
   written as text are recognised), then samples until end of text, a stop
   string, max_tokens or a full context. Text reaches on_token in whole UTF-8
   characters, with a possible stop string held back until it is ruled out.
   out (may be NULL with out_cap 0) receives the generated text, NUL-
   terminated; *out_len (may be NULL) is its full length: larger than
   out_cap - 1 means out was too small and holds the first out_cap - 1 bytes.
   Tokens already in the session's cache that start the new prompt are not
   evaluated again. Returns SLM_ERR_INVALID_ARG when the prompt holds a
   character the vocabulary cannot encode (see slm_tokenize; the message
   names it and its byte offset), SLM_ERR_CONTEXT_FULL when the prompt does
   not fit, or when the context filled before generation ended (the text
   generated up to there is delivered), SLM_ERR_CANCELLED when on_token asked
   to stop, SLM_ERR_FORMAT with stop_reason SLM_STOP_ERROR and the message
   "... non-finite logits ..." when the model computed no finite logit (NaN
   or infinite weights; the text up to there is delivered). */
SLM_API slm_result slm_generate(slm_session *session, const char *prompt, const slm_gen_opts *opts, char *out,
                                size_t out_cap, size_t *out_len);

/* ---- predictive text --------------------------------------------------- */

typedef struct slm_suggestion {
    char text[64]; /* the whole word (or phrase) as it reads once completed, NUL-terminated */
    float prob;    /* its probability under the model, given the text typed */
} slm_suggestion;

typedef struct slm_suggest_opts { /* zero-initialised = one word, no time limit */
    int n_words;                  /* words per suggestion: 0 or 1 = the current word, up to 8 = a phrase */
    float min_prob;               /* leave out suggestions below this (the search looks no lower); 0 = 0.01 */
    int max_ms;                   /* 0 = no limit; else return the best found after about max_ms */
    int (*cancel)(void *user);    /* polled between passes; non-zero: return -SLM_ERR_CANCELLED */
    void *user;
    const char *const *blocklist; /* words never suggested (exact, case-sensitive) */
    int n_blocklist;
} slm_suggest_opts;

/* 1 when slm_suggest counts code point cp as part of a word (a letter \p{L},
   a digit \p{N}, ' or U+2019), else 0: for apps that split words as it does. */
SLM_API int slm_word_char(uint32_t cp);

/* Up to n words that complete the text typed so far, most probable first.
   See PREDICTIVE TEXT at the top. Returns the count, or -slm_result. */
SLM_API int slm_suggest(slm_session *session, const char *text, slm_suggestion *out, int n,
                        const slm_suggest_opts *opts);

/* ---- scoring ----------------------------------------------------------- */

/* How probable a given text is under the model: log-probabilities of given
   tokens, continuations of one context ranked, labels classified. Natural
   logarithms throughout; log-softmax as llama.cpp's perplexity tool takes it
   (max subtracted in float, the sum of exponentials in double). */

typedef struct slm_logprob_opts { /* zero-initialised = log-probabilities only */
    int keep_logits;              /* non-zero: also keep the n_vocab logits of every position (slm_logits_row) */
} slm_logprob_opts;

/* Appends n tokens to the cache as slm_eval does and, in the same passes,
   writes logprobs[i] = log p(tokens[i] | the cache and tokens[0..i)) (logprobs
   may be NULL). logprobs[0] comes from the logits before the call: NaN when
   there are none (an empty cache, or after slm_rewind), so start a text with
   BOS and skip its entry. Each pass's logits are reduced at once; only
   min(n, 64) rows of n_vocab floats are held, on top of the session and
   within its max_bytes (SLM_ERR_OOM, with the sizes, when not even one row
   fits). With opts->keep_logits every row is kept instead: n x n_vocab
   floats (a 4096-token window of a 151936-token vocabulary is 2.5 GB),
   refused with SLM_ERR_OOM and their size when the session has a max_bytes
   they do not fit under. Allocates through the model's allocator; slm_logits
   afterwards is the last token's, as after slm_eval. SLM_ERR_CONTEXT_FULL when
   n > n_ctx - n_past (nothing is evaluated). */
SLM_API slm_result slm_eval_logprobs(slm_session *session, const slm_token *tokens, int n, float *logprobs,
                                     const slm_logprob_opts *opts);
/* Row i (0 <= i < n) of the logits kept by the last slm_eval_logprobs with
   keep_logits: the n_vocab logits after tokens[i]. NULL otherwise, and after
   any later slm_eval_logprobs. Valid until then or slm_session_free. */
SLM_API const float *slm_logits_row(const slm_session *session, int i);

/* The log-probability of each of n continuations given one context, all in
   one branch batch (slm_eval_branches): continuations[i] holds lengths[i] >= 1
   tokens. sums[i] (may be NULL) = the sum over continuation i's tokens of
   log p(token | context and the continuation's tokens before it);
   per_token (may be NULL) receives those terms, continuation after
   continuation (lengths[0] + ... + lengths[n - 1] floats). The values are
   bit for bit those of scoring each continuation alone: continuations that
   start with the same tokens share their nodes, and a continuation's last
   token is never evaluated (nothing follows it). The context (n_context >= 1
   tokens: start it with BOS when the model wants one) is evaluated into the
   cache as slm_generate would, reusing the tokens the cache already starts
   with, and stays there: scoring again with the same context evaluates only
   the continuations. The continuations leave nothing in the cache.
   SLM_ERR_CONTEXT_FULL when the context and a continuation, or the context
   and the continuations' distinct tokens, do not fit in n_ctx; SLM_ERR_OOM
   as slm_eval_logprobs (64 rows of n_vocab floats at most). */
SLM_API slm_result slm_score(slm_session *session, const slm_token *context, int n_context,
                             const slm_token *const *continuations, const int *lengths, int n, float *sums,
                             float *per_token);

/* Each label's probability as the answer to a prompt. With P =
   tokenize(prompt) and T_i = tokenize(prompt + label_i) (BOS when the model
   wants one, control tokens recognised, as slm_generate tokenizes), L_i is
   the sum of log p over the tokens of T_i after their common token prefix
   with P (a label may merge with the prompt's last token: that token is then
   scored as part of the label); probs[i] = exp(L_i) / sum_j exp(L_j). No
   length normalisation and no end marker: a label is scored as the text
   that starts the answer, so a label whose tokens begin another's ("pos" and
   "positive") is at least as probable as that other, which only adds
   factors below 1; end every label with the same marker (a newline, a
   period) when labels prefix each other, or choose labels that do not.
   log_likelihoods (may be NULL) receives the L_i. For an instruction-tuned
   model the prompt is the conversation rendered by slm_chat_format with
   add_assistant set (the assistant turn opened, nothing after it), the
   question listing the labels, and each label the exact text the assistant
   would start its reply with ("positive", not " positive"). All labels are
   scored in one slm_score call, so the prompt stays in the cache for the
   next slm_classify with the same prompt start. SLM_ERR_INVALID_ARG for an
   empty, NULL or repeated label, or when prompt and label share no first
   token (an empty prompt of a model without BOS); SLM_ERR_CONTEXT_FULL when
   the prompt and a label do not fit in n_ctx. */
SLM_API slm_result slm_classify(slm_session *session, const char *prompt, const char *const *labels, int n,
                                float *probs, double *log_likelihoods);

/* ---- chat ------------------------------------------------------------- */

typedef struct slm_chat_message {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
} slm_chat_message;

/* Renders messages as the model's chat template (tmpl SLM_CHAT_* or 0 for
   the one stored in the model), ending with the assistant's turn opening
   when add_assistant is set, ready for slm_generate (which adds BOS and
   parses the control tokens). Writes a NUL-terminated string to out (may be
   NULL with cap 0) and returns its full length, -1 when there is no template
   or an argument is wrong. */
SLM_API int slm_chat_format(const slm_model *model, int tmpl, const slm_chat_message *msgs, int n_msgs,
                            int add_assistant, char *out, size_t cap);

/* A conversation on a session: its messages, and the tokens of their
   rendering that the session's cache holds, so that each turn evaluates only
   what is new. The session is the caller's and must outlive it; anything
   else that changes the session's cache between turns only costs
   re-evaluation. Owns copies of every text it is given. */
typedef struct slm_conversation slm_conversation;

typedef struct slm_conversation_info {
    const slm_chat_message *messages; /* the conversation, system prompt first; valid until the next call on it */
    int n_messages;
    int n_tokens;  /* tokens of its rendering (what the cache holds, or will hold on the next turn) */
    int n_dropped; /* exchanges (user message + reply) the last slm_chat dropped to make room */
} slm_conversation_info;

/* Starts a conversation in template tmpl (SLM_CHAT_*, 0 = the model's own)
   with an optional system prompt (NULL or "" = none). SLM_ERR_UNSUPPORTED
   when the model has no chat template and tmpl is 0. */
SLM_API slm_result slm_conversation_new(slm_conversation **out, slm_session *session, int tmpl, const char *system);
SLM_API void slm_conversation_free(slm_conversation *conversation);
SLM_API slm_result slm_conversation_get(const slm_conversation *conversation, slm_conversation_info *out);

/* Appends a user message and generates the reply into the conversation, as
   slm_generate does (opts, out, out_len, streaming, stats: n_cached counts
   the prompt tokens reused from the cache). The cache holds the tokens of
   slm_chat_format of the whole conversation, each reply keeping the ids
   that were generated (re-tokenized from its text when they do not spell
   it: a stop string, a control token; and for a template whose rendering of
   a reply does not extend the text before it, Llama-2, the whole
   conversation is re-tokenized). Before generating, the oldest exchanges
   are dropped (the system prompt stays; info.n_dropped tells) until the
   prompt and opts->max_tokens (0: a quarter of n_ctx) fit in n_ctx; when
   the system prompt and the message alone leave no room, SLM_ERR_CONTEXT_FULL
   and the message is not added. A reply cut short (SLM_ERR_CANCELLED,
   SLM_ERR_CONTEXT_FULL) stays in the conversation as far as it got; on
   other errors the message is not added. */
SLM_API slm_result slm_chat(slm_conversation *conversation, const char *user, const slm_gen_opts *opts, char *out,
                            size_t out_cap, size_t *out_len);
/* Drops the last user message and its reply, rewinding the cache to its
   length before that turn. SLM_ERR_INVALID_ARG when there is none. */
SLM_API slm_result slm_chat_undo(slm_conversation *conversation);
/* Drops every message but the system prompt, whose tokens stay cached. */
SLM_API slm_result slm_chat_reset(slm_conversation *conversation);
/* A conversation as a blob: its template, messages and the token ids of each
   reply (u8[4] "SLMC", u16 major 1, u16 minor 0, u64 size, u64 model hash,
   u32 template, u32 n_messages, then per message u32 role (0 system, 1 user,
   2 assistant), i32 cache length before its turn (-1: unknown), u32 bytes,
   i32 ids (-1: not a reply), the text, the ids; u64 checksum). Sizes as
   slm_session_save's. Saved with the session's state (slm_session_save) and
   loaded on a session that slm_session_load restored from it, the next
   slm_chat evaluates only its new tokens, exactly as the saved conversation
   would have. slm_conversation_load makes a new conversation on session
   (its text and ids checked as slm_session_load checks a state: SLM_ERR_FORMAT,
   "from another model" SLM_ERR_INVALID_ARG); it does not touch the cache. */
SLM_API slm_result slm_conversation_save(const slm_conversation *conversation, void *buf, size_t cap, size_t *size);
SLM_API slm_result slm_conversation_load(slm_conversation **out, slm_session *session, const void *data, size_t size);

/* ---- fill-in-the-middle ------------------------------------------------ */

/* The prompt that asks a code model for the text between prefix and suffix,
   in the model's own format: BOS when the model adds it, then fim_pre,
   prefix, fim_suf, suffix, fim_mid (slm_model_info's ids, <fim_prefix> in
   StarCoder/SmolLM, <|fim_prefix|> in Qwen2.5-Coder; prefix and suffix are
   tokenized as plain text, control tokens not parsed). suffix may be NULL.
   Returns the count, -needed when cap is too small (out may be NULL with
   cap 0), 0 on an error, which the model's log reports: no FIM tokens, a
   character no token spells, invalid arguments. */
SLM_API int slm_fim_tokens(const slm_model *model, const char *prefix, const char *suffix, slm_token *out, int cap);
/* Generates the middle for slm_fim_tokens' prompt, as slm_generate does,
   stopping also at any FIM control token. SLM_ERR_UNSUPPORTED (session error
   "... no fill-in-the-middle tokens ...") when the model has none. */
SLM_API slm_result slm_fim(slm_session *session, const char *prefix, const char *suffix, const slm_gen_opts *opts,
                           char *out, size_t out_cap, size_t *out_len);

/* ---- low level --------------------------------------------------------- */

/* Returns the token count, -needed when cap is too small (out may be NULL with
   cap 0 to ask for the size), or 0 on an error, which the model's log
   callback reports: invalid arguments (text may be NULL only with len 0), out
   of memory, or a character that no token spells when the vocabulary has
   neither its byte tokens nor an unknown token ("cannot encode 'X' (U+0058)
   at byte N"). Such a character becomes its byte tokens, else the unknown
   token (one per character; per byte in byte-level BPE): nothing is
   dropped. 0 is also the count of an empty result, but a non-empty text
   never gives 0 tokens without an error. */
SLM_API int slm_tokenize(const slm_model *model, const char *text, size_t len, int flags, slm_token *out, int cap);
/* The bytes a token stands for (not NUL-terminated), or NULL for an invalid id. */
SLM_API const char *slm_token_piece(const slm_model *model, slm_token token, int *len);
SLM_API int slm_token_type(const slm_model *model, slm_token token); /* SLM_TOKEN_*, -1 if invalid */

/* Appends n tokens to the cache and computes the logits of the last one.
   SLM_ERR_CONTEXT_FULL when n > n_ctx - n_past (nothing is evaluated). */
SLM_API slm_result slm_eval(slm_session *session, const slm_token *tokens, int n);
/* n_vocab logits of the last evaluated position, or NULL when there are none. */
SLM_API const float *slm_logits(const slm_session *session);
/* Keeps the first n_keep (0 <= n_keep <= n_past) tokens of the cache. */
SLM_API slm_result slm_rewind(slm_session *session, int n_keep);
/* Branch batches: several continuations of the cached prefix evaluated
   together, each weight read once per pass for all of them (a pass holds up
   to 64 tokens; longer calls run in several).
   The tokens are the nodes of a tree that grows from the end of the prefix:
   tokens[i] follows parents[i], which is -1 (the prefix itself) or a node
   made earlier, by an earlier call or earlier in this one (parents[i] < the
   node's own id). Nodes are numbered from 0 in the order they are made:
   this call's start at slm_branch_count() before the call. Each token
   attends to the prefix and to its own ancestors only, at position n_past +
   its depth (a child of -1 has depth 0), so a node's logits are bit for bit
   those of slm_rewind(n_past) + slm_eval(its path), whatever the KV type,
   weight type and thread count. logits (may be NULL) receives n rows of
   n_vocab floats, one per token of the call, in the caller's buffer.
   Node j's KV entries live in cache slot n_past + j, so nodes count against
   n_ctx: SLM_ERR_CONTEXT_FULL when n_past + nodes + n would pass it, with
   nothing evaluated. SLM_ERR_INVALID_ARG for NULL tokens or parents, n <= 0,
   a token outside the vocabulary or a parent outside -1..(own id - 1).
   The prefix is untouched: slm_logits still answers for its last token.
   slm_branch_keep appends a node's path to the prefix; anything else that
   changes the cache (slm_eval, slm_rewind, also slm_rewind(n_past),
   slm_generate, slm_suggest) drops every node. */
SLM_API slm_result slm_eval_branches(slm_session *session, const slm_token *tokens, const int *parents, int n,
                                     float *logits);
SLM_API int slm_branch_count(const slm_session *session); /* nodes made since the last drop; -1 on NULL */
/* Appends node's path (root to node) to the prefix, n_past += its depth + 1,
   moving its KV entries (no evaluation), and drops every node; slm_logits
   then has none (evaluate on from here, or use the node's row of logits).
   SLM_ERR_INVALID_ARG when the node does not exist. */
SLM_API slm_result slm_branch_keep(slm_session *session, int node);

/* Draws the next token from the current logits (opts NULL = greedy); -1 on error.
   The draw comes from the session's random generator and opts->seed is not
   read: seed the generator with slm_session_seed. Only tokens with a finite
   logit are drawn (a NaN counts as -inf; +inf, an overflow, is as broken);
   -1 with the session error "... non-finite logits ..." when none has one.
   Greedy ties go to the lowest id. */
SLM_API slm_token slm_sample(slm_session *session, const slm_gen_opts *opts);
/* Restarts the session's random generator from seed, as slm_generate does
   with opts.seed: the same seed gives the same draws. A new session starts
   from seed 0, a fixed default. No-op on NULL. */
SLM_API void slm_session_seed(slm_session *session, uint64_t seed);

/* ---- utilities --------------------------------------------------------- */

SLM_API const char *slm_result_str(slm_result result);
SLM_API const char *slm_type_name(int type); /* "f32", "q8_0"...; NULL if unknown */
SLM_API int slm_type_block_size(int type);   /* elements per block; 0 if unknown */
/* Bytes of a row of n elements; 0 for an unknown type or a length the type cannot hold. */
SLM_API size_t slm_type_row_size(int type, int64_t n);
/* Converts n floats to `type` (n a multiple of the block size) and back.
   Quantization rounds exactly as GGML's reference quantizers. Not for the
   _R16 types, whose rows are not contiguous: see slm_interleave_rows. */
SLM_API slm_result slm_quantize_row(int type, const float *src, void *dst, int64_t n);
SLM_API slm_result slm_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Rewrites n_rows rows of n q4_0 (or q5_0, q8_0) elements into the SLM_TYPE_Q4_0_R16
   (or Q5_0_R16, Q8_0_R16) layout, given as type; n_rows a multiple of 16. dst and src
   have the same size and must not overlap. */
SLM_API slm_result slm_interleave_rows(int type, const void *src, void *dst, int64_t n, int64_t n_rows);
/* The split rule of a llama.cpp pre-tokenizer name ("gpt-2", "llama-bpe", "qwen2",
   "smollm"...), or -1 when slm.h does not implement that rule. */
SLM_API int slm_pretok_from_name(const char *name);
/* The built-in formatter matching a Jinja chat template's text, SLM_CHAT_NONE if none does. */
SLM_API int slm_chat_template_detect(const char *template_text);
SLM_API uint16_t slm_fp32_to_fp16(float f);
SLM_API float slm_fp16_to_fp32(uint16_t h);
SLM_API uint16_t slm_fp32_to_bf16(float f);
SLM_API float slm_bf16_to_fp32(uint16_t h);

#ifdef __cplusplus
}
#endif
#endif /* SLM_H */

/* =========================================================================
   INTERNALS SHARED WITH THE TOOLS AND TESTS
   The .slm layout below is the one source of truth for the loader, the
   converter's writer (tools/write_slm.c) and the tests; FORMAT.md documents
   it and tests/test_internals.c checks the two against each other. Defining
   SLM_INTERNAL before the include also declares the few slm__ functions the
   tools reuse (little-endian reads, the FNV-1a hash of token texts, "<0xXX>"
   byte tokens, the Llama-3 pre-tokenizer family), and gives them external
   linkage in the translation unit holding the implementation, so several
   tool files share one copy. Not an API: names and signatures change without
   notice, and applications should not define SLM_INTERNAL.
   ========================================================================= */
#if (defined(SLM_INTERNAL) || defined(SLM_IMPLEMENTATION)) && !defined(SLM__FORMAT_DEFINED)
#define SLM__FORMAT_DEFINED

#define SLM__MAGIC      "SLM\0" /* 4 bytes at offset 0 */
#define SLM__MAGIC_SIZE 4
#define SLM__DATA_ALIGN 64 /* tensor data offsets, so an mmap'ed file is used in place */
#define SLM__SECT_ALIGN 4  /* tokenizer section and tensor directory offsets */

/* header: u16 version fields, f32 hyper-parameters 48..56, u64 section table 80..120, the rest u32 */
#define SLM__H_MAGIC            0
#define SLM__H_VERSION_MAJOR    4
#define SLM__H_VERSION_MINOR    6
#define SLM__H_HEADER_SIZE      8
#define SLM__H_ARCH             12
#define SLM__H_N_VOCAB          16 /* the eight u32 sizes n_vocab..max_seq, in this order */
#define SLM__H_DIM              20
#define SLM__H_N_LAYERS         24
#define SLM__H_N_HEADS          28
#define SLM__H_N_KV_HEADS       32
#define SLM__H_HEAD_DIM         36
#define SLM__H_FFN_DIM          40
#define SLM__H_MAX_SEQ          44
#define SLM__H_ROPE_THETA       48
#define SLM__H_ROPE_FREQ_SCALE  52
#define SLM__H_NORM_EPS         56
#define SLM__H_FLAGS            60
#define SLM__H_ACTIVATION       64
#define SLM__H_ROPE_KIND        68
#define SLM__H_N_TENSORS        72
#define SLM__H_RESERVED         76
#define SLM__H_TOKENIZER_OFFSET 80
#define SLM__H_TOKENIZER_SIZE   88
#define SLM__H_METADATA_OFFSET  96
#define SLM__H_METADATA_SIZE    104
#define SLM__H_TENSORS_OFFSET   112
#define SLM__H_TENSORS_SIZE     120
#define SLM__HEADER_SIZE        128

#define SLM__FLAG_TIED     1u
#define SLM__FLAG_QKV_BIAS 2u
#define SLM__FLAG_QK_NORM  4u

/* tokenizer section header; the five arrays follow it (FORMAT.md) */
#define SLM__T_KIND          0
#define SLM__T_PRE           4
#define SLM__T_N_TOKENS      8
#define SLM__T_N_MERGES      12
#define SLM__T_SPECIAL       16 /* i32 ids in this order: */
#define SLM__T_BOS           16
#define SLM__T_EOS           20
#define SLM__T_EOT           24
#define SLM__T_PAD           28
#define SLM__T_UNK           32
#define SLM__T_FIM_PRE       36
#define SLM__T_FIM_SUF       40
#define SLM__T_FIM_MID       44
#define SLM__T_N_SPECIAL     8
#define SLM__T_CHAT_TEMPLATE 48
#define SLM__T_FLAGS         52
#define SLM__T_BLOB_SIZE     56
#define SLM__T_RESERVED      60
#define SLM__TOKHDR_SIZE     64
#define SLM__MAX_TOKENS      (1u << 22)
#define SLM__MAX_MERGES      (1u << 24)

/* the loader's bounds on the hyper-parameters (they keep every size product
   below 2^62); the converter checks them before writing */
#define SLM__MAX_DIM      (1u << 16)
#define SLM__MAX_LAYERS   (1u << 10)
#define SLM__MAX_HEADS    (1u << 10) /* n_heads and n_kv_heads */
#define SLM__MAX_HEAD_DIM (1u << 12)
#define SLM__MAX_FFN_DIM  (1u << 20)
#define SLM__MAX_SEQ      (1u << 24)

#define SLM__TOKFLAG_ADD_BOS       1u
#define SLM__TOKFLAG_ADD_EOS       2u
#define SLM__TOKFLAG_SPACE_PREFIX  4u
#define SLM__TOKFLAG_ESCAPE_SPACES 8u
#define SLM__TOKFLAG_IGNORE_MERGES 16u

/* tensor directory entry */
#define SLM__E_NAME            0 /* char[SLM__TENSOR_NAME_MAX], NUL-terminated and NUL-padded */
#define SLM__E_TYPE            64
#define SLM__E_N_DIMS          68
#define SLM__E_NE              72 /* u32[4] */
#define SLM__E_OFFSET          88
#define SLM__TENSOR_NAME_MAX   64
#define SLM__TENSOR_ENTRY_SIZE 96

#endif /* SLM__FORMAT_DEFINED */

#if defined(SLM_INTERNAL) && !defined(SLM__INTERNAL_DECLARED)
#define SLM__INTERNAL_DECLARED
#ifdef __cplusplus
extern "C" {
#endif
uint16_t slm__rd16(const uint8_t *p);
uint32_t slm__rd32(const uint8_t *p);
int32_t slm__rdi32(const uint8_t *p);
uint64_t slm__rd64(const uint8_t *p);
float slm__rdf32(const uint8_t *p);
uint32_t slm__hash_bytes(const char *s, size_t n);
int slm__byte_token_value(const char *text, uint32_t len);
int slm__pretok_llama3_family(const char *name);
#ifdef __cplusplus
}
#endif
#endif /* SLM__INTERNAL_DECLARED */

/* =========================================================================
   IMPLEMENTATION
   ========================================================================= */
#ifdef SLM_IMPLEMENTATION
#ifndef SLM__IMPLEMENTED
#define SLM__IMPLEMENTED

/* ---- config and platform ------------------------------------------------
   Everything the includer may override, and the few platform facilities the
   library touches: the allocator, file mapping, OpenMP. No other OS calls. */

#include <string.h>
#include <math.h>
#include <limits.h>
#include <float.h>
#include <stdarg.h>

#include <stdlib.h> /* qsort, and malloc/free unless the includer brings its own */

/* Half an allocator would pair one library's malloc with another's free. */
#if defined(SLM_MALLOC) && !defined(SLM_FREE)
#error "slm.h: SLM_MALLOC is defined but SLM_FREE is not: define both, or neither for malloc and free"
#elif defined(SLM_FREE) && !defined(SLM_MALLOC)
#error "slm.h: SLM_FREE is defined but SLM_MALLOC is not: define both, or neither for malloc and free"
#elif !defined(SLM_MALLOC)
#define SLM_MALLOC(sz) malloc(sz)
#define SLM_FREE(p)    free(p)
#endif

#include <time.h> /* slm_suggest's time budget */

/* Windows: the system's API only (kernel32), for mapping, paths, threads and
   the clock; nothing from winpthreads or a POSIX layer. */
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX /* no min and max macros in the includer's C++ */
#endif
#include <windows.h>
#endif

#ifndef SLM_NO_STDIO
#include <stdio.h>
#if defined(_WIN32)
#define SLM__MMAP_WIN32 1
#elif defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <sched.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#define SLM__MMAP_POSIX 1
#endif
#endif

/* Instruction sets: taken from the compiler's predefined macros, at compile
   time only (no run-time detection), so a plain build runs the plain C
   kernels and -march=native the best the build machine has. This is the one
   place that reads those macros; SLM_NO_SIMD leaves all of these undefined.
     SLM__F16C          -mf16c (x86-64-v3, -march=haswell and later): half conversion
     SLM__AVX2          -mavx2 -mfma (x86-64-v3); its kernel set also needs F16C
     SLM__AVX512        -mavx512f -mavx512bw -mavx512vl -mfma (x86-64-v4, skylake-avx512)
     SLM__AVX512_VNNI   that and -mavx512vnni (icelake-client, znver4, sapphirerapids)
     SLM__AVXVNNI       SLM__AVX2 and -mavxvnni, without AVX-512 (alderlake and later
                        Intel client CPUs): the 256-bit VEX vpdpbusd in the AVX2 kernels
     SLM__NEON          any aarch64 (armv8-a)
     SLM__NEON_DOTPROD  -march=armv8.2-a+dotprod, armv8.4-a and later, -mcpu=apple-m1
     SLM__NEON_I8MM     -march=armv8.6-a, armv8.2-a+dotprod+i8mm, -mcpu=neoverse-v1: smmla (prefill)
     SLM__ARM_FP16      aarch64's __fp16 storage type: half conversion in one instruction
   Each means that the kernels written for it can be compiled (an AVX-512 build
   also has the AVX2 ones); which kernels run is the kernel table below.

   SLM_DISPATCH (x86-64 with gcc or clang) instead compiles three kernel sets
   in this one file whatever the -m flags: the plain C one, AVX2+FMA+F16C and
   AVX-512 F+BW+VL+VNNI, each region of SIMD kernels under a function target
   (SLM__TARGET_AVX2_BEGIN ... SLM__TARGET_END), while everything else keeps
   the build's flags (-march=x86-64 for a binary that runs anywhere). The set
   that runs is chosen at slm_model_load from CPUID (see "kernel sets" in the
   kernels section). On aarch64 (gcc or clang) it compiles two: NEON, and
   NEON with the int8 dot product, whose kernels sit under
   SLM__TARGET_DOTPROD_BEGIN, chosen from the OS's hwcaps. Elsewhere
   SLM_DISPATCH is ignored: the compile-time choice below, as without it. */
#if defined(SLM_DISPATCH) && !defined(SLM_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64)) && \
    (defined(__GNUC__) || defined(__clang__))
#define SLM__DISPATCH         1
#define SLM__F16C             1
#define SLM__AVX2             1
#define SLM__AVX512           1
#define SLM__AVX512_VNNI      1
#define SLM__KERNEL_SET_NAMES "scalar, avx2 and avx512-vnni" /* for messages */
#include <immintrin.h>
#include <cpuid.h>
#elif !defined(SLM_NO_SIMD) && (defined(__x86_64__) || defined(_M_X64) || defined(__i386__))
#if defined(__F16C__)
#define SLM__F16C 1
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define SLM__AVX2 1
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__FMA__)
#define SLM__AVX512 1
#if defined(__AVX512VNNI__)
#define SLM__AVX512_VNNI 1
#endif
#endif
#if defined(SLM__AVX2) && defined(__AVXVNNI__) && !defined(SLM__AVX512)
#define SLM__AVXVNNI 1
#endif
#if defined(SLM__F16C) || defined(SLM__AVX2) || defined(SLM__AVX512)
#include <immintrin.h>
#endif
#elif !defined(SLM_NO_SIMD) && defined(__aarch64__)
#if defined(__ARM_FP16_FORMAT_IEEE)
#define SLM__ARM_FP16 1
#endif
#if defined(__ARM_NEON)
#define SLM__NEON 1
#include <arm_neon.h>
#if defined(SLM_DISPATCH) && (defined(__GNUC__) || defined(__clang__))
#define SLM__DISPATCH         1
#define SLM__NEON_DOTPROD     1
#define SLM__KERNEL_SET_NAMES "neon and neon-dotprod"
#if defined(__linux__)
#include <sys/auxv.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#elif defined(__ARM_FEATURE_DOTPROD)
#define SLM__NEON_DOTPROD 1
#endif
#if defined(__ARM_FEATURE_MATMUL_INT8) && !defined(SLM__DISPATCH) /* no third set yet */
#define SLM__NEON_I8MM 1
#endif
#endif
#endif

/* The kernel table: which kernel each instruction set runs for each
   operation. The rest of the file calls only the names on the left; a
   kernel's own name says what it is written for (_ref: the plain C
   reference; _generic: any instruction set, built on the row kernels;
   _blocks, _pairs: one loop for every instruction set around a per-set
   block kernel). Chosen by the preprocessor, so the hot loops make direct
   calls that inline. SLM__SIMD_NAME names the choice (tests, slm info).
   An SLM_DISPATCH build calls the operations through the running thread's
   kernel set instead (slm__kernel_set, filled per set in the kernels
   section: a kernel added to a set here is added there too, one line per
   set). */
#if defined(SLM__DISPATCH)
#define SLM__SIMD_NAME (SLM__K->name)
#if defined(SLM__AVX512_VNNI)
#define SLM__R16_TILE 8 /* the AVX-512 VNNI set's; the others' slm__gemm_r16 take any count */
#endif
#define slm__dot_f32             (SLM__K->dot_f32)
#define slm__dot_f16             (SLM__K->dot_f16)
#define slm__dot_bf16            (SLM__K->dot_bf16)
#define slm__dotn_q8_0           (SLM__K->dotn_q8_0)
#define slm__dotn_q4_0           (SLM__K->dotn_q4_0)
#define slm__dotm_q5_0           (SLM__K->dotm_q5_0)
#define slm__dotm_q5_1           (SLM__K->dotm_q5_1)
#define slm__dotm_q4_K           (SLM__K->dotm_q4_K)
#define slm__dotm_q5_K           (SLM__K->dotm_q5_K)
#define slm__dotm_q6_K           (SLM__K->dotm_q6_K)
#define slm__dotr_q4_K           (SLM__K->dotr_q4_K)
#define slm__dotr_q6_K           (SLM__K->dotr_q6_K)
#define SLM__DOTR_K              (SLM__K->dotr_q4_K != NULL) /* NULL in the sets without them */
#define slm__gemm_q4_K           (SLM__K->gemm_q4_K)
#define SLM__GEMM_Q4_K           (SLM__K->gemm_q4_K != NULL)
#define slm__gemm_r16            (SLM__K->gemm_r16)
#define slm__quantize_act_blocks (SLM__K->quantize_act_blocks)
#define slm__quantize_act_q8_K   (SLM__K->quantize_act_q8_K)
#define slm__axpy_f32            (SLM__K->axpy_f32)
#define slm__axpy_f16            (SLM__K->axpy_f16)
#define slm__dot_f16_group       (SLM__K->dot_f16_group)
#define slm__dot_f32_group       (SLM__K->dot_f32_group)
#define slm__attn_values_f16     (SLM__K->attn_values_f16)
#define slm__attn_values_f32     (SLM__K->attn_values_f32)
#define slm__dot_q8_0_group      (SLM__K->dot_q8_0_group)
#define slm__attn_values_q8_0    (SLM__K->attn_values_q8_0)
#define slm__attn_scores_f16     (SLM__K->attn_scores_f16)
#define slm__attn_scores_f32     (SLM__K->attn_scores_f32)
#define slm__attn_scores_q8_0    (SLM__K->attn_scores_q8_0)
#define slm__softmax             (SLM__K->softmax)
#define slm__silu_mul            (SLM__K->silu_mul)
#define slm__rmsnorm             (SLM__K->rmsnorm)
#define slm__fp32_to_fp16_row    (SLM__K->fp32_to_fp16_row)
typedef struct slm__kernel_set slm__kernel_set;
static const slm__kernel_set *slm__kernels_best(void);
/* the set of the pass this thread is running, put there by
   slm__forward_worker from the session's model (per thread, so models with
   different sets run side by side); a call outside a pass (the tests') runs
   the best set */
static __thread const slm__kernel_set *slm__kernels_here;
#define SLM__K (slm__kernels_here ? slm__kernels_here : slm__kernels_best())

#elif defined(SLM__AVX512)
#if defined(SLM__AVX512_VNNI)
#define SLM__SIMD_NAME "avx512-vnni"
#else
#define SLM__SIMD_NAME "avx512"
#endif
#define slm__dot_f32             slm__dot_f32_avx512
#define slm__dot_f16             slm__dot_f16_avx512
#define slm__dot_bf16            slm__dot_bf16_avx512
#define slm__dotn_q8_0           slm__dotn_q8_0_avx512
#define slm__dotn_q4_0           slm__dotn_q4_0_avx512
#define slm__dotm_q5_0           slm__dotm_q5_0_avx512
#define slm__dotm_q5_1           slm__dotm_q5_1_avx512
#define slm__dotm_q4_K           slm__dotm_q4_K_avx512
#define slm__dotm_q5_K           slm__dotm_q5_K_avx512
#define slm__dotm_q6_K           slm__dotm_q6_K_avx512
#define slm__gemm_r16_q5_nt      slm__gemm_r16_q5_nt_avx512
#define slm__quantize_act_blocks slm__quantize_act_blocks_avx2
#define slm__quantize_act_q8_K   slm__quantize_q8_K_avx512
#define slm__axpy_f32            slm__axpy_f32_avx2
#define slm__dot_f16_group       slm__dot_f16_group_avx512 /* not _avx2: each head rounds as slm__dot_f16 */
#define slm__dot_f32_group       slm__dot_f32_group_avx512
#define slm__attn_values_f32     slm__attn_values_f32_avx512
#define slm__dot_q8_0_group      slm__dot_q8_0_group_avx2
#define slm__attn_block_q8_0     slm__attn_block_q8_0_avx2
#define slm__attn_values_q8_0    slm__attn_values_q8_0_blocks
#define slm__attn_scores_f16     slm__attn_scores_f16_avx512
#define slm__attn_scores_f32     slm__attn_scores_f32_avx512
#define slm__softmax             slm__softmax_avx512
#define slm__silu_mul            slm__silu_mul_avx512
#define slm__rmsnorm             slm__rmsnorm_avx512
#define slm__fp32_to_fp16_row    slm__fp32_to_fp16_row_avx512
#if defined(SLM__AVX512_VNNI)
#define slm__gemm_r16  slm__gemm_r16_avx512vnni
#define SLM__R16_TILE  8 /* tokens per slm__gemm_r16 call in slm__matmul */
#define slm__dotr_q4_K slm__dotr_q4_K_avx512vnni
#define slm__dotr_q6_K slm__dotr_q6_K_avx512vnni
#define SLM__DOTR_K    1
#define slm__gemm_q4_K slm__gemm_q4_K_avx512vnni
#define SLM__GEMM_Q4_K 1
#else
#define slm__gemm_r16_nt slm__gemm_r16_nt_avx512
#define slm__gemm_r16    slm__gemm_r16_pairs
#endif
#if defined(SLM__F16C) /* not implied by -mavx512f */
#define slm__axpy_f16         slm__axpy_f16_avx2
#define slm__attn_values_f16  slm__attn_values_f16_avx512 /* fused, as slm__axpy_f16_avx2 */
#define slm__attn_scores_q8_0 slm__attn_scores_q8_0_avx2
#else
#define slm__axpy_f16         slm__axpy_f16_ref
#define slm__attn_values_f16  slm__attn_values_f16_generic
#define slm__attn_scores_q8_0 slm__attn_scores_q8_0_generic
#endif

#elif defined(SLM__AVX2) && defined(SLM__F16C)
#if defined(SLM__AVXVNNI)
#define SLM__SIMD_NAME   "avx2-vnni"
#define slm__gemm_r16_nt slm__gemm_r16_nt_avxvnni
#else
#define SLM__SIMD_NAME   "avx2"
#define slm__gemm_r16_nt slm__gemm_r16_nt_avx2
#endif
#define slm__dot_f32             slm__dot_f32_avx2
#define slm__dot_f16             slm__dot_f16_avx2
#define slm__dot_bf16            slm__dot_bf16_avx2
#define slm__dotn_q8_0           slm__dotn_q8_0_avx2
#define slm__dotn_q4_0           slm__dotn_q4_0_avx2
#define slm__dotm_q5_0           slm__dotm_q5_0_avx2
#define slm__dotm_q5_1           slm__dotm_q5_1_avx2
#define slm__dotm_q4_K           slm__dotm_q4_K_avx2
#define slm__dotm_q5_K           slm__dotm_q5_K_avx2
#define slm__dotm_q6_K           slm__dotm_q6_K_avx2
#define slm__gemm_r16_q5_nt      slm__gemm_r16_q5_nt_avx2
#define slm__gemm_r16            slm__gemm_r16_pairs
#define slm__quantize_act_blocks slm__quantize_act_blocks_avx2
#define slm__axpy_f32            slm__axpy_f32_avx2
#define slm__axpy_f16            slm__axpy_f16_avx2
#define slm__dot_f16_group       slm__dot_f16_group_avx2
#define slm__dot_f32_group       slm__dot_f32_group_avx2
#define slm__attn_values_f16     slm__attn_values_f16_avx2
#define slm__attn_values_f32     slm__attn_values_f32_avx2
#define slm__dot_q8_0_group      slm__dot_q8_0_group_avx2
#define slm__attn_block_q8_0     slm__attn_block_q8_0_avx2
#define slm__attn_values_q8_0    slm__attn_values_q8_0_blocks
#define slm__attn_scores_f16     slm__attn_scores_f16_avx2
#define slm__attn_scores_f32     slm__attn_scores_f32_avx2
#define slm__attn_scores_q8_0    slm__attn_scores_q8_0_avx2
#define slm__softmax             slm__softmax_avx2
#define slm__silu_mul            slm__silu_mul_avx2
#define slm__rmsnorm             slm__rmsnorm_avx2
#define slm__fp32_to_fp16_row    slm__fp32_to_fp16_row_avx2

#elif defined(SLM__NEON)
#if defined(SLM__NEON_I8MM)
#define SLM__SIMD_NAME "neon-i8mm"
#elif defined(SLM__NEON_DOTPROD)
#define SLM__SIMD_NAME "neon-dotprod"
#else
#define SLM__SIMD_NAME "neon"
#endif
#if defined(SLM__NEON_DOTPROD) /* the integer kernels with sdot */
#define slm__dotn_q8_0      slm__dotn_q8_0_dotprod
#define slm__dotn_q4_0      slm__dotn_q4_0_dotprod
#define slm__dotm_q5_0      slm__dotm_q5_0_dotprod
#define slm__dotm_q5_1      slm__dotm_q5_1_dotprod
#define slm__dotm_q4_K      slm__dotm_q4_K_dotprod
#define slm__dotm_q5_K      slm__dotm_q5_K_dotprod
#define slm__dotm_q6_K      slm__dotm_q6_K_dotprod
#define slm__gemm_r16_nt    slm__gemm_r16_nt_dotprod
#define slm__gemm_r16_q5_nt slm__gemm_r16_q5_nt_dotprod
#else /* with widening multiplies */
#define slm__dotn_q8_0      slm__dotn_q8_0_neon
#define slm__dotn_q4_0      slm__dotn_q4_0_neon
#define slm__dotm_q5_0      slm__dotm_q5_0_neon
#define slm__dotm_q5_1      slm__dotm_q5_1_neon
#define slm__dotm_q4_K      slm__dotm_q4_K_neon
#define slm__dotm_q5_K      slm__dotm_q5_K_neon
#define slm__dotm_q6_K      slm__dotm_q6_K_neon
#define slm__gemm_r16_nt    slm__gemm_r16_nt_neon
#define slm__gemm_r16_q5_nt slm__gemm_r16_q5_nt_neon
#endif
#define slm__dot_f32             slm__dot_f32_neon
#define slm__dot_f16             slm__dot_f16_neon
#define slm__dot_bf16            slm__dot_bf16_neon
#define slm__quantize_act_blocks slm__quantize_act_blocks_ref
#define slm__axpy_f32            slm__axpy_f32_neon
#define slm__axpy_f16            slm__axpy_f16_neon
#define slm__dot_f16_group       slm__dot_f16_group_generic
#define slm__dot_f32_group       slm__dot_f32_group_generic
#define slm__attn_values_f16     slm__attn_values_f16_generic
#define slm__attn_values_f32     slm__attn_values_f32_generic
#define slm__dot_q8_0_group      slm__dot_q8_0_group_neon
#define slm__attn_block_q8_0     slm__attn_block_q8_0_neon
#define slm__attn_values_q8_0    slm__attn_values_q8_0_blocks
#define slm__attn_scores_f16     slm__attn_scores_f16_generic
#define slm__attn_scores_f32     slm__attn_scores_f32_generic
#define slm__attn_scores_q8_0    slm__attn_scores_q8_0_generic
#define slm__softmax             slm__softmax_neon
#define slm__silu_mul            slm__silu_mul_neon
#define slm__rmsnorm             slm__rmsnorm_neon
#define slm__fp32_to_fp16_row    slm__fp32_to_fp16_row_neon
#if defined(SLM__NEON_I8MM)
#define slm__gemm_r16 slm__gemm_r16_i8mm /* its single tokens: slm__gemm_r16_nt's */
#else
#define slm__gemm_r16 slm__gemm_r16_pairs
#endif

#else
#define SLM__SIMD_NAME           "scalar"
#define slm__dot_f32             slm__dot_f32_ref
#define slm__dot_f16             slm__dot_f16_ref
#define slm__dot_bf16            slm__dot_bf16_ref
#define slm__dotn_q8_0           slm__dotn_q8_0_ref
#define slm__dotn_q4_0           slm__dotn_q4_0_ref
#define slm__dotm_q5_0           slm__dotm_q5_0_ref
#define slm__dotm_q5_1           slm__dotm_q5_1_ref
#define slm__dotm_q4_K           slm__dotm_q4_K_ref
#define slm__dotm_q5_K           slm__dotm_q5_K_ref
#define slm__dotm_q6_K           slm__dotm_q6_K_ref
#define slm__gemm_r16            slm__gemm_r16_ref
#define slm__quantize_act_blocks slm__quantize_act_blocks_ref
#define slm__axpy_f32            slm__axpy_f32_ref
#define slm__axpy_f16            slm__axpy_f16_ref
#define slm__dot_f16_group       slm__dot_f16_group_generic
#define slm__dot_f32_group       slm__dot_f32_group_generic
#define slm__attn_values_f16     slm__attn_values_f16_generic
#define slm__attn_values_f32     slm__attn_values_f32_generic
#define slm__dot_q8_0_group      slm__dot_q8_0_group_ref
#define slm__attn_values_q8_0    slm__attn_values_q8_0_ref
#define slm__attn_scores_f16     slm__attn_scores_f16_generic
#define slm__attn_scores_f32     slm__attn_scores_f32_generic
#define slm__attn_scores_q8_0    slm__attn_scores_q8_0_generic
#define slm__softmax             slm__softmax_ref
#define slm__silu_mul            slm__silu_mul_ref
#define slm__rmsnorm             slm__rmsnorm_ref
#define slm__fp32_to_fp16_row    slm__fp32_to_fp16_row_ref
#endif

#define SLM__KQ_GEMM_TOK 64 /* tokens per slm__gemm_q4_K call: slm__matmul's batch */
#ifndef SLM__KQ_GEMM_MIN
#define SLM__KQ_GEMM_MIN 2 /* fewer tokens (decode) take slm__dotr_q4_K */
#endif
#ifndef slm__quantize_act_q8_K
#define slm__quantize_act_q8_K slm__quantize_q8_K
#endif
#ifndef SLM__R16_TILE
#define SLM__R16_TILE 4
#endif

/* half to float (slm_fp16_to_fp32): exact in every version. An x86
   SLM_DISPATCH build converts with F16C inside its AVX2 and AVX-512 regions
   only (aarch64's conversion is in its baseline). */
#if defined(SLM__DISPATCH) && defined(SLM__F16C)
#define slm__fp16_to_fp32 slm__fp16_to_fp32_ref
#elif defined(SLM__F16C)
#define slm__fp16_to_fp32 slm__fp16_to_fp32_f16c
#elif defined(SLM__ARM_FP16)
#define slm__fp16_to_fp32 slm__fp16_to_fp32_arm
#else
#define slm__fp16_to_fp32 slm__fp16_to_fp32_ref
#endif

/* Threads: the library's own pool wherever there are pthreads, even in a
   build with -fopenmp, because its waits are the library's to choose (spin
   briefly, then sleep) while libgomp's are set only by environment variables
   of the whole process (OMP_WAIT_POLICY, GOMP_SPINCOUNT), and its spinning
   threads made 2 threads slower than 1 on a busy 2-core machine (figures in
   THREADS at the top). OpenMP when asked for (SLM_USE_OPENMP), or where
   there are no threads the pool knows (a compiler without the atomics below).
   On Windows the pool runs on Win32 threads (SRWLOCK, CONDITION_VARIABLE),
   not on winpthreads: MinGW-w64 and MSVC builds need nothing but the system. */
#if defined(SLM_USE_OPENMP) && !defined(_OPENMP) && !defined(SLM_NO_THREADS)
#error "slm.h: SLM_USE_OPENMP needs a build with OpenMP (-fopenmp)"
#endif
#if defined(SLM_NO_THREADS)
#elif (defined(__unix__) || defined(__APPLE__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(SLM_USE_OPENMP)
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#define SLM__PTHREADS 1
#elif defined(_WIN32) && (defined(__GNUC__) || defined(__clang__) || defined(_MSC_VER)) && !defined(SLM_USE_OPENMP)
#include <process.h> /* _beginthreadex: the C runtime's per-thread state is set up */
#define SLM__WIN32_THREADS 1
#elif defined(_OPENMP)
#include <omp.h>
#define SLM__OPENMP 1
#endif
#if defined(SLM__PTHREADS) || defined(SLM__WIN32_THREADS)
#define SLM__POOL 1 /* the library's own pool */
#endif
/* The pool's few system calls, the same on both: a mutex and a condition
   variable only to sleep, threads started once per session. Win32's SRW
   lock and condition variable cannot fail to initialise and need no
   destruction. */
#if defined(SLM__PTHREADS)
typedef pthread_t slm__thread;
typedef pthread_mutex_t slm__mutex;
typedef pthread_cond_t slm__cond;
#define SLM__THREAD_FN(name, arg)     static void *name(void *arg)
#define SLM__THREAD_RETURN            return NULL
#define slm__thread_start(t, fn, arg) (pthread_create((t), NULL, (fn), (arg)) == 0)
#define slm__thread_join(t)           pthread_join((t), NULL)
#define slm__mutex_init(mu)           (pthread_mutex_init((mu), NULL) == 0)
#define slm__mutex_destroy(mu)        pthread_mutex_destroy(mu)
#define slm__mutex_lock(mu)           pthread_mutex_lock(mu)
#define slm__mutex_unlock(mu)         pthread_mutex_unlock(mu)
#define slm__cond_init(cv)            (pthread_cond_init((cv), NULL) == 0)
#define slm__cond_destroy(cv)         pthread_cond_destroy(cv)
#define slm__cond_wait(cv, mu)        pthread_cond_wait((cv), (mu))
#define slm__cond_broadcast(cv)       pthread_cond_broadcast(cv)
#elif defined(SLM__WIN32_THREADS)
typedef HANDLE slm__thread;
typedef SRWLOCK slm__mutex;
typedef CONDITION_VARIABLE slm__cond;
#define SLM__THREAD_FN(name, arg)     static unsigned __stdcall name(void *arg)
#define SLM__THREAD_RETURN            return 0
#define slm__thread_start(t, fn, arg) ((*(t) = (HANDLE)_beginthreadex(NULL, 0, (fn), (arg), 0, NULL)) != 0)
#define slm__thread_join(t)           (WaitForSingleObject((t), INFINITE), CloseHandle(t))
#define slm__mutex_init(mu)           (InitializeSRWLock(mu), 1)
#define slm__mutex_destroy(mu)        ((void)(mu))
#define slm__mutex_lock(mu)           AcquireSRWLockExclusive(mu)
#define slm__mutex_unlock(mu)         ReleaseSRWLockExclusive(mu)
#define slm__cond_init(cv)            (InitializeConditionVariable(cv), 1)
#define slm__cond_destroy(cv)         ((void)(cv))
#define slm__cond_wait(cv, mu)        SleepConditionVariableSRW((cv), (mu), INFINITE, 0)
#define slm__cond_broadcast(cv)       WakeAllConditionVariable(cv)
#endif
#if defined(SLM__OPENMP) || defined(SLM__POOL)
#define SLM__THREADS 1
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SLM__MAYBE_UNUSED __attribute__((unused))
#else
#define SLM__MAYBE_UNUSED
#endif
#if defined(__GNUC__) || defined(__clang__)
#define SLM__INLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define SLM__INLINE static __forceinline
#else
#define SLM__INLINE static
#endif
/* The function target of a region of SIMD kernels in an SLM_DISPATCH build
   (nothing otherwise: the -m flags decide). Inside an x86 one,
   slm_fp16_to_fp32 is the F16C instruction (the regions redefine it),
   outside the plain C. gcc 12's arm_neon.h declares the dot product
   intrinsics under "arch=armv8.2-a+dotprod", and a function that inlines
   them needs all of it ("+dotprod" alone is refused); clang's target is the
   feature. */
#if defined(SLM__DISPATCH) && defined(SLM__NEON) && defined(__ARM_FEATURE_DOTPROD)
#define SLM__TARGET_DOTPROD_BEGIN /* the -march has it (an armv8.2-a+dotprod region would take the rest away) */
#define SLM__TARGET_END
#elif defined(SLM__DISPATCH) && defined(SLM__NEON) && defined(__clang__)
#define SLM__TARGET_DOTPROD_BEGIN \
    _Pragma("clang attribute push(__attribute__((target(\"dotprod\"))), apply_to = function)")
#define SLM__TARGET_END _Pragma("clang attribute pop")
#elif defined(SLM__DISPATCH) && defined(SLM__NEON)
#define SLM__TARGET_DOTPROD_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"arch=armv8.2-a+dotprod\")")
#define SLM__TARGET_END           _Pragma("GCC pop_options")
#elif defined(SLM__DISPATCH) && defined(__clang__)
/* clang-format off */
#define SLM__TARGET_AVX2_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define SLM__TARGET_AVX512_BEGIN _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\"))), apply_to = function)")
/* clang-format on */
#define SLM__TARGET_END _Pragma("clang attribute pop")
#elif defined(SLM__DISPATCH)
#define SLM__TARGET_AVX2_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define SLM__TARGET_AVX512_BEGIN \
    _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni\")")
#define SLM__TARGET_END _Pragma("GCC pop_options")
#else
#define SLM__TARGET_AVX2_BEGIN
#define SLM__TARGET_AVX512_BEGIN
#define SLM__TARGET_DOTPROD_BEGIN
#define SLM__TARGET_END
#endif
/* Unrolled loops over registers: an array of vectors indexed in a loop that
   is not unrolled lives in memory. */
#if defined(__clang__)
#define SLM__UNROLL4 _Pragma("unroll 4")
#define SLM__UNROLL  _Pragma("unroll")
#elif defined(__GNUC__) && __GNUC__ >= 8
#define SLM__UNROLL4 _Pragma("GCC unroll 4")
#define SLM__UNROLL  _Pragma("GCC unroll 16")
#else
#define SLM__UNROLL4
#define SLM__UNROLL
#endif
#define SLM__MIN(a, b) ((a) < (b) ? (a) : (b))
#define SLM__MAX(a, b) ((a) > (b) ? (a) : (b))
#define SLM__ALIGN     64

/* ---- allocation, logging, errors ----------------------------------------
   Every allocation goes through the model's allocator; every message is
   formatted by a small local formatter so that SLM_NO_STDIO builds keep
   their error detail. Messages are written to a caller-owned buffer (load)
   or to the session (everything after load) and optionally to the log. */

#define SLM__MSG_MAX 512 /* bytes of an error or log message with its NUL; longer ones are cut */

static void *slm__default_alloc(size_t size, void *user) {
    (void)user;
    return SLM_MALLOC(size);
}
static void slm__default_free(void *ptr, void *user) {
    (void)user;
    SLM_FREE(ptr);
}

static slm_allocator slm__allocator_or_default(slm_allocator a) {
    if (!a.alloc && !a.free) {
        a.alloc = slm__default_alloc;
        a.free = slm__default_free;
        a.user = NULL;
    }
    return a;
}
static void *slm__alloc(const slm_allocator *a, size_t size) { return size ? a->alloc(size, a->user) : NULL; }
static void *slm__calloc(const slm_allocator *a, size_t n, size_t elem) {
    void *p;
    if (n == 0 || elem == 0 || n > (size_t)-1 / elem) return NULL;
    p = a->alloc(n * elem, a->user);
    if (p) memset(p, 0, n * elem);
    return p;
}
static void slm__free(const slm_allocator *a, void *p) {
    if (p) a->free(p, a->user);
}

/* A vsnprintf subset: %s %c %d %u %x %lld %llu %zu %g %%. Always terminates. */
static size_t slm__vformat(char *buf, size_t cap, const char *fmt, va_list ap) {
    size_t n = 0;
    char tmp[48]; /* the digits of a 64-bit number, in any base used here */
#define SLM__PUT(ch)                    \
    do {                                \
        char put_ = (char)(ch);         \
        if (n + 1 < cap) buf[n] = put_; \
        n++;                            \
    } while (0)
    for (; *fmt; fmt++) {
        const char *s = tmp;
        int len = 0, neg = 0;
        unsigned long long u = 0;
        int base = 10;
        if (*fmt != '%') {
            SLM__PUT(*fmt);
            continue;
        }
        fmt++;
        if (*fmt == 's') {
            s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            while (*s) SLM__PUT(*s++);
            continue;
        }
        if (*fmt == 'c') {
            SLM__PUT((char)va_arg(ap, int));
            continue;
        }
        if (*fmt == '%') {
            SLM__PUT('%');
            continue;
        }
        if (*fmt == 'g') {
            /* enough for messages: sign, integer part, 4 decimals */
            double d = va_arg(ap, double), ip;
            unsigned long long frac;
            if (d != d) {
                s = "nan";
                while (*s) SLM__PUT(*s++);
                continue;
            }
            if (d < 0) {
                SLM__PUT('-');
                d = -d;
            }
            if (d > 1e18) {
                s = "inf";
                while (*s) SLM__PUT(*s++);
                continue;
            }
            ip = floor(d);
            frac = (unsigned long long)((d - ip) * 10000.0 + 0.5);
            if (frac >= 10000) {
                ip += 1;
                frac -= 10000;
            }
            u = (unsigned long long)ip;
            do {
                tmp[len++] = (char)('0' + u % 10);
                u /= 10;
            } while (u);
            while (len) SLM__PUT(tmp[--len]);
            if (frac) {
                int k;
                char f[4];
                for (k = 3; k >= 0; k--) {
                    f[k] = (char)('0' + frac % 10);
                    frac /= 10;
                }
                k = 4;
                while (k > 0 && f[k - 1] == '0') k--;
                SLM__PUT('.');
                {
                    int j;
                    for (j = 0; j < k; j++) SLM__PUT(f[j]);
                }
            }
            continue;
        }
        if (*fmt == 'd') {
            long long v = va_arg(ap, int);
            neg = v < 0;
            u = neg ? 0ull - (unsigned long long)v : (unsigned long long)v;
        } else if (*fmt == 'u')
            u = va_arg(ap, unsigned);
        else if (*fmt == 'x') {
            u = va_arg(ap, unsigned);
            base = 16;
        } else if (*fmt == 'z' && fmt[1] == 'u') {
            fmt++;
            u = va_arg(ap, size_t);
        } else if (fmt[0] == 'l' && fmt[1] == 'l' && fmt[2] == 'd') {
            long long v = va_arg(ap, long long);
            fmt += 2;
            neg = v < 0;
            u = neg ? 0ull - (unsigned long long)v : (unsigned long long)v;
        } else if (fmt[0] == 'l' && fmt[1] == 'l' && fmt[2] == 'u') {
            fmt += 2;
            u = va_arg(ap, unsigned long long);
        } else {
            SLM__PUT('%');
            if (!*fmt) break;
            SLM__PUT(*fmt);
            continue;
        }
        do {
            tmp[len++] = "0123456789abcdef"[u % (unsigned)base];
            u /= (unsigned)base;
        } while (u);
        if (neg) SLM__PUT('-');
        while (len) SLM__PUT(tmp[--len]);
    }
    if (cap) buf[n < cap ? n : cap - 1] = 0;
#undef SLM__PUT
    return n;
}

static void slm__format(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    slm__vformat(buf, cap, fmt, ap);
    va_end(ap);
}

SLM_API const char *slm_result_str(slm_result r) {
    switch (r) {
    case SLM_OK: return "ok";
    case SLM_ERR_IO: return "i/o error";
    case SLM_ERR_FORMAT: return "malformed model file";
    case SLM_ERR_UNSUPPORTED: return "unsupported";
    case SLM_ERR_OOM: return "out of memory";
    case SLM_ERR_INVALID_ARG: return "invalid argument";
    case SLM_ERR_CONTEXT_FULL: return "context full";
    case SLM_ERR_CANCELLED: return "cancelled";
    }
    return "unknown result";
}

/* ---- number formats -----------------------------------------------------
   f16/bf16 conversion in portable C (bit-exact, round to nearest even) and the
   block formats: q8_0 = {f16 d; i8 q[32]}, q4_0 = {f16 d; u8 q[16]}, the GGUF
   layouts, so GGUF tensors import as a copy. Quantizers round exactly as
   GGML's reference ones, so a converted model matches llama.cpp's. */

#define SLM__QK 32
typedef struct {
    uint16_t d;
    int8_t q[SLM__QK];
} slm__block_q8_0;
typedef struct {
    uint16_t d;
    uint8_t q[SLM__QK / 2];
} slm__block_q4_0;

/* The K-quants: super-blocks of 256 (QK_K), ggml-common.h's layouts. q4_K
   and q5_K hold 8 sub-blocks of 32 with 6-bit scales and mins packed in
   scales[12]: x = d*sc*q - dmin*m (q5_K's fifth bit in qh); q6_K holds 16
   sub-blocks of 16 with signed 8-bit scales: x = d*sc*(q - 32). q5_0/q5_1
   are blocks of 32 with the fifth bits in qh: x = (q - 16)*d, x = q*d + m. */
#define SLM__QK_K 256
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[SLM__QK / 2];
} slm__block_q5_0;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[SLM__QK / 2];
} slm__block_q5_1;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[SLM__QK_K / 2];
} slm__block_q4_K;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[SLM__QK_K / 8];
    uint8_t qs[SLM__QK_K / 2];
} slm__block_q5_K;
typedef struct {
    uint8_t ql[SLM__QK_K / 2];
    uint8_t qh[SLM__QK_K / 4];
    int8_t scales[SLM__QK_K / 16];
    uint16_t d;
} slm__block_q6_K;

static uint32_t slm__f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float slm__bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

SLM__INLINE float slm__fp16_to_fp32_ref(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return slm__bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return slm__bits_f32(sign);
        /* subnormal: value = man * 2^-24 exactly representable in f32 */
        return sign ? -(float)man * 5.9604644775390625e-8f : (float)man * 5.9604644775390625e-8f;
    }
    return slm__bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}
#if defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
SLM__INLINE float slm__fp16_to_fp32_f16c(uint16_t h) { return _cvtsh_ss(h); }
SLM__TARGET_END
#endif
/* what the SIMD regions of the kernels convert with (SLM__TARGET_AVX2_BEGIN) */
#if defined(SLM__DISPATCH) && defined(SLM__F16C)
#define SLM__FP16_TO_FP32_SIMD slm__fp16_to_fp32_f16c
#else
#define SLM__FP16_TO_FP32_SIMD slm__fp16_to_fp32
#endif
#if defined(SLM__ARM_FP16)
SLM__INLINE float slm__fp16_to_fp32_arm(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, 2);
    return (float)v;
}
#endif

SLM_API float slm_fp16_to_fp32(uint16_t h) { return slm__fp16_to_fp32(h); }

SLM_API uint16_t slm_fp32_to_fp16(float f) {
    uint32_t x = slm__f32_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {                                   /* below 2^-14: subnormal */
        uint32_t shift, man, r, half;
        if (ax < 0x33000000u) return (uint16_t)sign; /* below 2^-25: rounds to 0 */
        shift = 126u - (ax >> 23);                   /* 14..24 */
        man = (ax & 0x7fffffu) | 0x800000u;
        r = man >> shift;
        half = 1u << (shift - 1);
        if ((man & ((half << 1) - 1)) > half || ((man & ((half << 1) - 1)) == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    } else {
        uint32_t r = ax - 0x38000000u; /* rebias 127 -> 15 */
        uint32_t lower = r & 0x1fffu;
        r >>= 13;
        if (lower > 0x1000u || (lower == 0x1000u && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
}

SLM_API float slm_bf16_to_fp32(uint16_t h) { return slm__bits_f32((uint32_t)h << 16); }
SLM_API uint16_t slm_fp32_to_bf16(float f) {
    uint32_t x = slm__f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

SLM_API const char *slm_type_name(int type) {
    switch (type) {
    case SLM_TYPE_F32: return "f32";
    case SLM_TYPE_F16: return "f16";
    case SLM_TYPE_BF16: return "bf16";
    case SLM_TYPE_Q8_0: return "q8_0";
    case SLM_TYPE_Q4_0: return "q4_0";
    case SLM_TYPE_Q5_0: return "q5_0";
    case SLM_TYPE_Q5_1: return "q5_1";
    case SLM_TYPE_Q4_K: return "q4_k";
    case SLM_TYPE_Q5_K: return "q5_k";
    case SLM_TYPE_Q6_K: return "q6_k";
    case SLM_TYPE_Q8_0_R16: return "q8_0_r16";
    case SLM_TYPE_Q4_0_R16: return "q4_0_r16";
    case SLM_TYPE_Q5_0_R16: return "q5_0_r16";
    }
    return NULL;
}

/* The block type of an interleaved type, the type itself otherwise. */
static int slm__block_type(int type) {
    return type == SLM_TYPE_Q8_0_R16 || type == SLM_TYPE_Q4_0_R16 || type == SLM_TYPE_Q5_0_R16 ? type - 1024 : type;
}
static int slm__type_is_r16(int type) {
    return type == SLM_TYPE_Q8_0_R16 || type == SLM_TYPE_Q4_0_R16 || type == SLM_TYPE_Q5_0_R16;
}

SLM_API int slm_type_block_size(int type) {
    switch (slm__block_type(type)) {
    case SLM_TYPE_F32:
    case SLM_TYPE_F16:
    case SLM_TYPE_BF16: return 1;
    case SLM_TYPE_Q8_0:
    case SLM_TYPE_Q4_0:
    case SLM_TYPE_Q5_0:
    case SLM_TYPE_Q5_1: return SLM__QK;
    case SLM_TYPE_Q4_K:
    case SLM_TYPE_Q5_K:
    case SLM_TYPE_Q6_K: return SLM__QK_K;
    }
    return 0;
}

static size_t slm__type_block_bytes(int type) {
    switch (slm__block_type(type)) {
    case SLM_TYPE_F32: return 4;
    case SLM_TYPE_F16:
    case SLM_TYPE_BF16: return 2;
    case SLM_TYPE_Q8_0: return sizeof(slm__block_q8_0);
    case SLM_TYPE_Q4_0: return sizeof(slm__block_q4_0);
    case SLM_TYPE_Q5_0: return sizeof(slm__block_q5_0);
    case SLM_TYPE_Q5_1: return sizeof(slm__block_q5_1);
    case SLM_TYPE_Q4_K: return sizeof(slm__block_q4_K);
    case SLM_TYPE_Q5_K: return sizeof(slm__block_q5_K);
    case SLM_TYPE_Q6_K: return sizeof(slm__block_q6_K);
    }
    return 0;
}

SLM_API size_t slm_type_row_size(int type, int64_t n) {
    int bs = slm_type_block_size(type);
    uint64_t blocks;
    if (bs == 0 || n < 0 || n % bs) return 0;
    blocks = (uint64_t)(n / bs);
    if (blocks > (uint64_t)((size_t)-1 / slm__type_block_bytes(type))) return 0;
    return (size_t)blocks * slm__type_block_bytes(type);
}

/* The quantizers (and dequantizers) must round every product and sum as
   GGML's reference ones, compiled without fused multiply-adds (ggml-base, which llama-quantize
   runs, is built for plain x86-64), or a few bytes of a model differ from
   llama-quantize's: no contraction into FMA here (clang's -ffp-contract=fast
   and -ffast-math override this and may change a few bytes). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

static void slm__quantize_q8_0(const float *x, slm__block_q8_0 *y, int64_t n) {
    int64_t b;
    int j;
    for (b = 0; b < n / SLM__QK; b++) {
        float amax = 0.0f, d, id;
        for (j = 0; j < SLM__QK; j++) amax = SLM__MAX(amax, fabsf(x[b * SLM__QK + j]));
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = slm_fp32_to_fp16(d);
        for (j = 0; j < SLM__QK; j++) {
            float v = roundf(x[b * SLM__QK + j] * id);
            /* finite input is already in range; NaN/inf must not reach the int conversion */
            y[b].q[j] = (int8_t)(v >= -127.0f ? (v <= 127.0f ? v : 127.0f) : (v < 0.0f ? -127.0f : 0.0f));
        }
    }
}

static void slm__quantize_q4_0(const float *x, slm__block_q4_0 *y, int64_t n) {
    int64_t b;
    int j;
    for (b = 0; b < n / SLM__QK; b++) {
        const float *xb = x + b * SLM__QK;
        float amax = 0.0f, max = 0.0f, d, id;
        for (j = 0; j < SLM__QK; j++)
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        d = max / -8.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = slm_fp32_to_fp16(d);
        for (j = 0; j < SLM__QK / 2; j++) {
            float v0 = xb[j] * id + 8.5f, v1 = xb[j + SLM__QK / 2] * id + 8.5f;
            int q0 = v0 >= 0.0f ? (v0 < 15.0f ? (int)v0 : 15) : 0; /* NaN reads as 0 */
            int q1 = v1 >= 0.0f ? (v1 < 15.0f ? (int)v1 : 15) : 0;
            y[b].q[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* As q4_0 with 32 levels: d = max / -16, the fifth bit of element j in bit j of qh. */
static void slm__quantize_q5_0(const float *x, slm__block_q5_0 *y, int64_t n) {
    int64_t b;
    int j;
    for (b = 0; b < n / SLM__QK; b++) {
        const float *xb = x + b * SLM__QK;
        float amax = 0.0f, max = 0.0f, d, id;
        uint32_t qh = 0;
        for (j = 0; j < SLM__QK; j++)
            if (fabsf(xb[j]) > amax) {
                amax = fabsf(xb[j]);
                max = xb[j];
            }
        d = max / -16.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = slm_fp32_to_fp16(d);
        for (j = 0; j < SLM__QK / 2; j++) {
            float v0 = xb[j] * id + 16.5f, v1 = xb[j + SLM__QK / 2] * id + 16.5f;
            int q0 = v0 >= 0.0f ? (v0 < 31.0f ? (int)v0 : 31) : 0; /* NaN reads as 0 */
            int q1 = v1 >= 0.0f ? (v1 < 31.0f ? (int)v1 : 31) : 0;
            y[b].qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + SLM__QK / 2);
        }
        for (j = 0; j < 4; j++) y[b].qh[j] = (uint8_t)(qh >> (8 * j));
    }
}

/* 32 levels from the block's minimum: d = (max - min) / 31, m = min. */
static void slm__quantize_q5_1(const float *x, slm__block_q5_1 *y, int64_t n) {
    int64_t b;
    int j;
    for (b = 0; b < n / SLM__QK; b++) {
        const float *xb = x + b * SLM__QK;
        float min = FLT_MAX, max = -FLT_MAX, d, id;
        uint32_t qh = 0;
        for (j = 0; j < SLM__QK; j++) {
            if (xb[j] < min) min = xb[j];
            if (xb[j] > max) max = xb[j];
        }
        d = (max - min) / 31.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = slm_fp32_to_fp16(d);
        y[b].m = slm_fp32_to_fp16(min);
        for (j = 0; j < SLM__QK / 2; j++) {
            float v0 = (xb[j] - min) * id + 0.5f, v1 = (xb[j + SLM__QK / 2] - min) * id + 0.5f;
            int q0 = v0 >= 0.0f ? (v0 < 31.0f ? (int)v0 : 31) : 0;
            int q1 = v1 >= 0.0f ? (v1 < 31.0f ? (int)v1 : 31) : 0;
            y[b].qs[j] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + SLM__QK / 2);
        }
        for (j = 0; j < 4; j++) y[b].qh[j] = (uint8_t)(qh >> (8 * j));
    }
}

/* Scale and min number j (0..7) of a q4_K/q5_K block: 6 bits each, the
   first four in the low bits of scales[0..7], the last four split between
   scales[8..11] and the top bits of scales[0..7] (GGML's get_scale_min_k4). */
SLM__INLINE void slm__kq_scale_min(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* The five bits of element j (0..31) of a q5_0/q5_1 block. */
SLM__INLINE int slm__q5_at(const uint8_t *qs, const uint8_t *qh, int j) {
    int nib = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
    return nib | (((qh[j / 8] >> (j % 8)) & 1) << 4);
}
/* The quant (0..31) of element l (0..255) of a q4_K (qh NULL) or q5_K block:
   each 64 elements share 32 bytes of qs, low nibbles then high nibbles. */
SLM__INLINE int slm__q45k_at(const uint8_t *qs, const uint8_t *qh, int l) {
    int chunk = l / 64, j = l % 64, byte = qs[chunk * 32 + j % 32], q = j < 32 ? byte & 15 : byte >> 4;
    if (qh) q |= ((qh[j % 32] >> (l / 32)) & 1) << 4;
    return q;
}
/* The quant (-32..31) of element l (0..255) of a q6_K block, whose scale is scales[l / 16]. */
SLM__INLINE int slm__q6k_at(const slm__block_q6_K *b, int l) {
    int half = l / 128, j = l % 128, g = j / 32, i = j % 32;
    int lo = b->ql[half * 64 + (g & 1) * 32 + i], hi = b->qh[half * 32 + i];
    return ((g < 2 ? lo & 15 : lo >> 4) | (((hi >> (2 * g)) & 3) << 4)) - 32;
}

/* K-quant rows to floats, in the arithmetic order of ggml's dequantize_row_*
   (so the floats are the same): d*sc and dmin*m once per sub-block. */
static void slm__dequantize_kq(int type, const uint8_t *p, float *y, int64_t n) {
    int64_t b;
    int j, l;
    for (b = 0; b < n / SLM__QK_K; b++, y += SLM__QK_K) {
        if (type == SLM_TYPE_Q6_K) {
            const slm__block_q6_K *blk = (const slm__block_q6_K *)p + b;
            float d = slm_fp16_to_fp32(blk->d);
            for (l = 0; l < SLM__QK_K; l++) y[l] = d * (float)blk->scales[l / 16] * (float)slm__q6k_at(blk, l);
        } else {
            const uint8_t *scales, *qs, *qh = NULL;
            float d, dmin;
            if (type == SLM_TYPE_Q4_K) {
                const slm__block_q4_K *blk = (const slm__block_q4_K *)p + b;
                d = slm_fp16_to_fp32(blk->d);
                dmin = slm_fp16_to_fp32(blk->dmin);
                scales = blk->scales;
                qs = blk->qs;
            } else {
                const slm__block_q5_K *blk = (const slm__block_q5_K *)p + b;
                d = slm_fp16_to_fp32(blk->d);
                dmin = slm_fp16_to_fp32(blk->dmin);
                scales = blk->scales;
                qs = blk->qs;
                qh = blk->qh;
            }
            for (j = 0; j < 8; j++) {
                int sc, mn;
                float d1, m1;
                slm__kq_scale_min(j, scales, &sc, &mn);
                d1 = d * (float)sc;
                m1 = dmin * (float)mn;
                for (l = 0; l < 32; l++) y[32 * j + l] = d1 * (float)slm__q45k_at(qs, qh, 32 * j + l) - m1;
            }
        }
    }
}

/* ---- K-quant quantizers: GGML's reference ones (quantize_row_q4_K_ref and
   its kin, what llama-quantize runs without an importance matrix), step for
   step in the same float arithmetic, so that the bytes are the same. */

/* Round to nearest, ties to even, by GGML's float trick (|x| < 2^22). */
static int slm__nearest_int(float f) {
    float v;
    int32_t i;
    if (!(fabsf(f) <= 4194303.0f)) return f > 0.0f ? 4194303 : f < 0.0f ? -4194303 : 0; /* NaN: 0 */
    v = f + 12582912.0f;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

/* Levels 0..nmax with a scale and a min for n values: the min-max grid, then
   nstep+1 other grids whose least-squares fit (weighted) may do better
   (GGML's make_qkx2_quants with use_mad false). Returns the scale; *the_min
   is minus the offset. */
static float slm__make_qkx2(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                            uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0], sum_w = weights[0], sum_x = sum_w * x[0], iscale, scale, best_error = 0.0f;
    int i, is;
    for (i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (max == min) {
        for (i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.0f;
    }
    iscale = (float)nmax / (max - min);
    scale = 1.0f / iscale;
    for (i = 0; i < n; i++) {
        int l = slm__nearest_int(iscale * (x[i] - min));
        float diff;
        L[i] = (uint8_t)SLM__MAX(0, SLM__MIN(nmax, l));
        diff = scale * (float)L[i] + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    for (is = 0; is <= nstep; is++) {
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f, D;
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        for (i = 0; i < n; i++) {
            int l = slm__nearest_int(iscale * (x[i] - min));
            float w = weights[i];
            l = SLM__MAX(0, SLM__MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            sum_l += w * (float)l;
            sum_l2 += w * (float)l * (float)l;
            sum_xl += w * (float)l * x[i];
        }
        D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0.0f) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            float cur_error = 0.0f;
            if (this_min > 0.0f) {
                this_min = 0.0f;
                this_scale = sum_xl / sum_l2;
            }
            for (i = 0; i < n; i++) {
                float diff = this_scale * (float)Laux[i] + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if (cur_error < best_error) {
                for (i = 0; i < n; i++) L[i] = Laux[i];
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Signed levels -nmax..nmax-1 (stored + nmax) with one scale for n values,
   weighted by x^2: the grid of the largest magnitude, then 18 nearby ones
   (GGML's make_qx_quants with rmse_type 1 and no weights). */
static float slm__make_qx(int n, int nmax, const float *x, int8_t *L) {
    float max = 0.0f, amax = 0.0f, iscale, sumlx = 0.0f, suml2 = 0.0f, scale, best;
    int i, is;
    for (i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    if (amax < 1e-15f) {
        for (i = 0; i < n; i++) L[i] = 0;
        return 0.0f;
    }
    iscale = -(float)nmax / max;
    for (i = 0; i < n; i++) {
        int l = slm__nearest_int(iscale * x[i]);
        float w = x[i] * x[i];
        l = SLM__MAX(-nmax, SLM__MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    best = scale * sumlx;
    for (is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0.0f;
        for (i = 0; i < n; i++) {
            int l = slm__nearest_int(iscale * x[i]);
            float w = x[i] * x[i];
            l = SLM__MAX(-nmax, SLM__MIN(nmax - 1, l));
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0.0f && sumlx * sumlx > best * suml2) {
            for (i = 0; i < n; i++) {
                int l = slm__nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + SLM__MAX(-nmax, SLM__MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* q4_K (nmax 15) and q5_K (nmax 31): 8 sub-blocks fitted with make_qkx2,
   their scales and mins quantized to 6 bits against the largest, then every
   value quantized again with the stored scales. */
static void slm__quantize_q45k(const float *x, uint8_t *y, int64_t n, int five) {
    int64_t b;
    int nmax = five ? 31 : 15, j, l;
    for (b = 0; b < n / SLM__QK_K; b++, x += SLM__QK_K) {
        uint8_t L[SLM__QK_K], Laux[32], *scales, *qs, *qh = NULL;
        float weights[32], mins[8], sc[8], max_scale = 0.0f, max_min = 0.0f, inv_scale, inv_min, d, dmin;
        uint16_t *pd, *pdmin;
        if (five) {
            slm__block_q5_K *blk = (slm__block_q5_K *)y + b;
            pd = &blk->d;
            pdmin = &blk->dmin;
            scales = blk->scales;
            qs = blk->qs;
            qh = blk->qh;
        } else {
            slm__block_q4_K *blk = (slm__block_q4_K *)y + b;
            pd = &blk->d;
            pdmin = &blk->dmin;
            scales = blk->scales;
            qs = blk->qs;
        }
        for (j = 0; j < 8; j++) {
            float sum_x2 = 0.0f, av_x;
            for (l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
            av_x = sqrtf(sum_x2 / 32.0f);
            for (l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
            sc[j] = five ? slm__make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15)
                         : slm__make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20);
            if (sc[j] > max_scale) max_scale = sc[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
        inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
        for (j = 0; j < 8; j++) {
            /* GGML stores nearest_int in a uint8_t before clamping: the same for 0..255 */
            int ls = SLM__MIN(63, slm__nearest_int(inv_scale * sc[j]) & 255),
                lm = SLM__MIN(63, slm__nearest_int(inv_min * mins[j]) & 255);
            if (j < 4) {
                scales[j] = (uint8_t)ls;
                scales[j + 4] = (uint8_t)lm;
            } else {
                scales[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
                scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
                scales[j] |= (uint8_t)((lm >> 4) << 6);
            }
        }
        *pd = slm_fp32_to_fp16(max_scale / 63.0f);
        *pdmin = slm_fp32_to_fp16(max_min / 63.0f);
        d = slm_fp16_to_fp32(*pd);
        dmin = slm_fp16_to_fp32(*pdmin);
        for (j = 0; j < 8; j++) {
            int s, m;
            float dj, dm;
            slm__kq_scale_min(j, scales, &s, &m);
            dj = d * (float)s;
            if (dj == 0.0f) continue;
            dm = dmin * (float)m;
            for (l = 0; l < 32; l++) {
                int q = slm__nearest_int((x[32 * j + l] + dm) / dj);
                L[32 * j + l] = (uint8_t)SLM__MAX(0, SLM__MIN(nmax, q));
            }
        }
        if (qh) memset(qh, 0, SLM__QK_K / 8);
        for (j = 0; j < SLM__QK_K; j += 64)
            for (l = 0; l < 32; l++) {
                int l1 = L[j + l], l2 = L[j + l + 32];
                if (qh) {
                    qh[l] |= (uint8_t)(((l1 >> 4) << (j / 32)) | ((l2 >> 4) << (j / 32 + 1)));
                    l1 &= 15;
                    l2 &= 15;
                }
                qs[j / 2 + l] = (uint8_t)(l1 | (l2 << 4));
            }
    }
}

/* q6_K: 16 sub-blocks of 16 fitted with make_qx (nmax 32), their scales
   quantized to signed 8 bits against the largest magnitude. */
static void slm__quantize_q6k(const float *x, slm__block_q6_K *y, int64_t n) {
    int64_t b;
    int j, l;
    for (b = 0; b < n / SLM__QK_K; b++, x += SLM__QK_K) {
        slm__block_q6_K *blk = y + b;
        int8_t L[SLM__QK_K];
        float scales[16], max_scale = 0.0f, max_abs_scale = 0.0f, iscale, d;
        for (j = 0; j < 16; j++) {
            scales[j] = slm__make_qx(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(blk, 0, sizeof *blk);
        if (max_abs_scale < 1e-15f) continue; /* all zero (or NaN): d = 0 */
        iscale = -128.0f / max_scale;
        blk->d = slm_fp32_to_fp16(1.0f / iscale);
        for (j = 0; j < 16; j++) blk->scales[j] = (int8_t)SLM__MIN(127, slm__nearest_int(iscale * scales[j]));
        d = slm_fp16_to_fp32(blk->d);
        for (j = 0; j < 16; j++) {
            float dj = d * (float)blk->scales[j];
            if (dj == 0.0f) continue;
            for (l = 0; l < 16; l++) {
                int q = slm__nearest_int(x[16 * j + l] / dj);
                L[16 * j + l] = (int8_t)(SLM__MAX(-32, SLM__MIN(31, q)) + 32);
            }
        }
        for (j = 0; j < SLM__QK_K; j += 128)
            for (l = 0; l < 32; l++) {
                int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
                blk->ql[j / 2 + l] = (uint8_t)((q1 & 0xF) | ((q3 & 0xF) << 4));
                blk->ql[j / 2 + l + 32] = (uint8_t)((q2 & 0xF) | ((q4 & 0xF) << 4));
                blk->qh[j / 4 + l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
    }
}

/* Activations for the K-quant kernels, as llama.cpp makes them (q8_K): per
   256 values an f32 scale d = max / -127 (max: the value of largest
   magnitude), quants rounded to nearest even and capped at 127, and the sum
   of every 16 quants, which the K-quants' mins and offsets multiply. With the
   same activations as llama.cpp, a K-quant model's logits follow llama.cpp's
   closely; integer sums over a whole super-block need one float step per
   256 weights. */
typedef struct {
    float d;
    int8_t qs[SLM__QK_K];
    int16_t bsums[SLM__QK_K / 16];
} slm__block_q8_K;

SLM__MAYBE_UNUSED static void slm__quantize_q8_K(const float *x, slm__block_q8_K *y, int n) {
    int b, j;
    for (b = 0; b < n / SLM__QK_K; b++, x += SLM__QK_K) {
        float amax = 0.0f, max = 0.0f, iscale;
        for (j = 0; j < SLM__QK_K; j++)
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        if (amax == 0.0f) { /* (or NaN) */
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        iscale = -127.0f / max;
        for (j = 0; j < SLM__QK_K; j++) y[b].qs[j] = (int8_t)SLM__MIN(127, slm__nearest_int(iscale * x[j]));
        for (j = 0; j < SLM__QK_K / 16; j++) {
            int k, s = 0;
            for (k = 0; k < 16; k++) s += y[b].qs[16 * j + k];
            y[b].bsums[j] = (int16_t)s;
        }
        y[b].d = 1.0f / iscale;
    }
}

static void slm__quantize_kq(int type, const float *x, uint8_t *y, int64_t n) {
    if (type == SLM_TYPE_Q6_K)
        slm__quantize_q6k(x, (slm__block_q6_K *)y, n);
    else
        slm__quantize_q45k(x, y, n, type == SLM_TYPE_Q5_K);
}

SLM_API slm_result slm_quantize_row(int type, const float *src, void *dst, int64_t n) {
    int64_t i;
    if (!src || !dst || n < 0 || (n && !slm_type_row_size(type, n))) return SLM_ERR_INVALID_ARG;
    switch (type) {
    case SLM_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) {
            uint16_t h = slm_fp32_to_fp16(src[i]);
            memcpy((char *)dst + 2 * i, &h, 2);
        }
        break;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) {
            uint16_t h = slm_fp32_to_bf16(src[i]);
            memcpy((char *)dst + 2 * i, &h, 2);
        }
        break;
    case SLM_TYPE_Q8_0: slm__quantize_q8_0(src, (slm__block_q8_0 *)dst, n); break;
    case SLM_TYPE_Q4_0: slm__quantize_q4_0(src, (slm__block_q4_0 *)dst, n); break;
    case SLM_TYPE_Q5_0: slm__quantize_q5_0(src, (slm__block_q5_0 *)dst, n); break;
    case SLM_TYPE_Q5_1: slm__quantize_q5_1(src, (slm__block_q5_1 *)dst, n); break;
    case SLM_TYPE_Q4_K:
    case SLM_TYPE_Q5_K:
    case SLM_TYPE_Q6_K: slm__quantize_kq(type, src, (uint8_t *)dst, n); break;
    default: return SLM_ERR_INVALID_ARG;
    }
    return SLM_OK;
}

SLM_API slm_result slm_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    int64_t i, b;
    int j;
    const uint8_t *p = (const uint8_t *)src;
    if (!src || !dst || n < 0 || (n && !slm_type_row_size(type, n))) return SLM_ERR_INVALID_ARG;
    switch (type) {
    case SLM_TYPE_F32: memcpy(dst, src, (size_t)n * 4); break;
    case SLM_TYPE_F16:
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = slm_fp16_to_fp32(h);
        }
        break;
    case SLM_TYPE_BF16:
        for (i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = slm_bf16_to_fp32(h);
        }
        break;
    case SLM_TYPE_Q8_0:
        for (b = 0; b < n / SLM__QK; b++) {
            const slm__block_q8_0 *blk = (const slm__block_q8_0 *)p + b;
            float d = slm_fp16_to_fp32(blk->d);
            for (j = 0; j < SLM__QK; j++) dst[b * SLM__QK + j] = (float)blk->q[j] * d;
        }
        break;
    case SLM_TYPE_Q4_0:
        for (b = 0; b < n / SLM__QK; b++) {
            const slm__block_q4_0 *blk = (const slm__block_q4_0 *)p + b;
            float d = slm_fp16_to_fp32(blk->d);
            for (j = 0; j < SLM__QK / 2; j++) {
                dst[b * SLM__QK + j] = (float)((blk->q[j] & 0x0f) - 8) * d;
                dst[b * SLM__QK + j + SLM__QK / 2] = (float)((blk->q[j] >> 4) - 8) * d;
            }
        }
        break;
    case SLM_TYPE_Q5_0:
        for (b = 0; b < n / SLM__QK; b++) {
            const slm__block_q5_0 *blk = (const slm__block_q5_0 *)p + b;
            float d = slm_fp16_to_fp32(blk->d);
            for (j = 0; j < SLM__QK; j++) dst[b * SLM__QK + j] = (float)(slm__q5_at(blk->qs, blk->qh, j) - 16) * d;
        }
        break;
    case SLM_TYPE_Q5_1:
        for (b = 0; b < n / SLM__QK; b++) {
            const slm__block_q5_1 *blk = (const slm__block_q5_1 *)p + b;
            float d = slm_fp16_to_fp32(blk->d), m = slm_fp16_to_fp32(blk->m);
            for (j = 0; j < SLM__QK; j++) dst[b * SLM__QK + j] = (float)slm__q5_at(blk->qs, blk->qh, j) * d + m;
        }
        break;
    case SLM_TYPE_Q4_K:
    case SLM_TYPE_Q5_K:
    case SLM_TYPE_Q6_K: slm__dequantize_kq(type, p, dst, n); break;
    default: return SLM_ERR_INVALID_ARG;
    }
    return SLM_OK;
}

#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

/* The _R16 layout. Rows go in groups of 16; a group of nb blocks per row is
   nb x 16 f16 scales (block b of rows 0..15), then the quants of block b of
   the 16 rows for b = 0..nb-1: four bytes of row 0, the same four of row 1,
   ... row 15, then the next four bytes of each row (q8_0: 8 such 64-byte
   lines per block; q4_0: 4 lines of the packed nibbles; q5_0: the 16 rows'
   32-bit masks of fifth bits, then 4 lines of nibbles). One 64-byte line
   holds the same 4 elements of 16 rows: the lanes of one int8 dot-product
   instruction. */
#define SLM__R16 16

/* Byte offsets inside a group of an interleaved tensor. */
static size_t slm__r16_quant_bytes(int type) { return slm__type_block_bytes(slm__block_type(type)) - 2; }
static const uint8_t *slm__r16_scales(const uint8_t *group, int b) { return group + (size_t)b * SLM__R16 * 2; }
/* q5_0_r16 four tokens a pass, then the rest in one (inside an _R16 GEMM
   whose arguments are group, nb, x, xsum, xs, nt, y, ys) */
#define SLM__GEMM_R16_Q5_PASSES(q5_nt)                                                                              \
    do {                                                                                                            \
        for (; nt >= 4; nt -= 4, x += 4 * xs, xsum += 4 * xs, y += 4 * ys) q5_nt(group, nb, x, xsum, xs, 4, y, ys); \
        if (nt == 3) q5_nt(group, nb, x, xsum, xs, 3, y, ys);                                                       \
        if (nt == 2) q5_nt(group, nb, x, xsum, xs, 2, y, ys);                                                       \
        if (nt == 1) q5_nt(group, nb, x, xsum, xs, 1, y, ys);                                                       \
    } while (0)
static const uint8_t *slm__r16_quants(int type, const uint8_t *group, int nb, int b) {
    return group + (size_t)nb * SLM__R16 * 2 + (size_t)b * SLM__R16 * slm__r16_quant_bytes(type);
}

SLM_API slm_result slm_interleave_rows(int type, const void *src, void *dst, int64_t n, int64_t n_rows) {
    size_t row_size = slm_type_row_size(type, n), block = slm__type_block_bytes(type), qb = slm__r16_quant_bytes(type);
    int64_t g;
    int nb, b, r, k;
    if (!slm__type_is_r16(type) || !src || !dst || n <= 0 || !row_size || n_rows <= 0 || n_rows % SLM__R16 ||
        n / SLM__QK > INT_MAX)
        return SLM_ERR_INVALID_ARG;
    nb = (int)(n / SLM__QK);
    for (g = 0; g < n_rows / SLM__R16; g++) {
        const uint8_t *in = (const uint8_t *)src + (size_t)g * SLM__R16 * row_size;
        uint8_t *out = (uint8_t *)dst + (size_t)g * SLM__R16 * row_size;
        for (b = 0; b < nb; b++)
            for (r = 0; r < SLM__R16; r++) {
                const uint8_t *blk = in + (size_t)r * row_size + (size_t)b * block; /* f16 d, then qb quant bytes */
                uint8_t *q = (uint8_t *)slm__r16_quants(type, out, nb, b);
                memcpy((uint8_t *)slm__r16_scales(out, b) + 2 * r, blk, 2);
                for (k = 0; k < (int)qb / 4; k++) memcpy(q + (size_t)k * 4 * SLM__R16 + 4 * r, blk + 2 + 4 * k, 4);
            }
    }
    return SLM_OK;
}

/* Row `row` of an interleaved tensor, as floats. */
static void slm__r16_dequantize_row(int type, const void *data, int64_t n, int64_t row, float *dst) {
    size_t row_size = slm_type_row_size(type, n);
    const uint8_t *group = (const uint8_t *)data + (size_t)(row / SLM__R16) * SLM__R16 * row_size;
    int nb = (int)(n / SLM__QK), r = (int)(row % SLM__R16), b, k;
    size_t qb = slm__r16_quant_bytes(type);
    uint8_t blk[sizeof(slm__block_q8_0)];
    for (b = 0; b < nb; b++) {
        const uint8_t *q = slm__r16_quants(type, group, nb, b);
        memcpy(blk, slm__r16_scales(group, b) + 2 * r, 2);
        for (k = 0; k < (int)qb / 4; k++) memcpy(blk + 2 + 4 * k, q + (size_t)k * 4 * SLM__R16 + 4 * r, 4);
        slm_dequantize_row(slm__block_type(type), blk, dst + (size_t)b * SLM__QK, SLM__QK);
    }
}

/* ---- file format and loading --------------------------------------------
   Owns the model: maps (or reads, or borrows) the .slm bytes, checks every
   count, size and offset against the file size before anything is used, and
   builds the immutable slm_model: tensor directory, layer table, tokenizer
   tables. Allocations here are bounded by the file size, so a hostile header
   cannot make the loader reserve gigabytes. The byte layout is FORMAT.md. */

/* The SLM__H_ / SLM__T_ / SLM__E_ offsets and sizes are defined above the
   implementation, where the tools and tests see them too. */
#ifdef SLM_INTERNAL
#define SLM__SHARED /* external linkage: tools/ link against these */
#else
#define SLM__SHARED static
#endif

typedef struct slm__tensor {
    const char *name;
    int type, n_dims;
    int64_t ne[4];
    uint64_t offset, size;
    size_t row_size; /* bytes of one row of ne[0] elements */
    const void *data;
    int used; /* bound to a layer or the model: a tensor nothing binds is refused, or ignored (newer minor) */
} slm__tensor;

typedef struct slm__layer {
    const slm__tensor *attn_norm, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *q_norm, *k_norm;
    const slm__tensor *ffn_norm, *w_gate, *w_up, *w_down;
} slm__layer;

/* eos, eot and the six turn-end texts slm__build_vocab_tables looks for */
#define SLM__MAX_EOG 8

typedef struct slm__vocab {
    int kind, pre, n_tokens, n_merges;
    unsigned flags;
    slm_token bos, eos, eot, pad, unk, fim_pre, fim_suf, fim_mid;
    slm_token fim_pad, fim_rep, fim_sep; /* from the metadata (tokenizer.fim_pad ...), -1 when absent */
    int chat_template;
    const float *scores;
    const uint32_t *text_off; /* n_tokens + 1 offsets into text */
    const uint32_t *merges;
    const uint8_t *types;
    const char *text;
    int32_t *hash;       /* open addressing, text -> lowest id */
    int32_t *merge_hash; /* open addressing, (left, right) -> lowest rank */
    uint32_t merge_mask;
    uint32_t hash_mask;
    char *piece; /* decoded bytes of every token (byte tokens, U+2581) */
    uint32_t *piece_off;
    slm_token byte_token[256];   /* id of each <0xXX> token, -1 if none */
    slm_token *special;          /* control / user-defined tokens by text, then id (slm__sort_special) */
    uint32_t special_first[257]; /* special[special_first[b]..special_first[b + 1]) start with byte b */
    slm_token eog[SLM__MAX_EOG]; /* tokens that end generation: eos, eot and chat turn ends */
    int n_eog;
    int n_special;
    int max_piece_len;
} slm__vocab;

struct slm_model {
    slm_allocator alloc;
    slm_log_fn log;
    void *log_user;
    const uint8_t *file;
    uint64_t file_size;
    void *owned;    /* buffer holding `file` when read or copied */
    void *map_addr; /* mapping holding `file` */
    size_t map_len;
#ifdef SLM__MMAP_WIN32
    HANDLE map_handle;
#endif
    slm_model_info info;
    slm__tensor *tensors;
    slm__tensor **by_name; /* tensors sorted by name: duplicates side by side, lookups by bisection */
    int n_tensors;
    slm__layer *layers;
    const slm__tensor *tok_embd, *output_norm, *output;
    int has_kquant; /* a matrix is q4_K, q5_K or q6_K: sessions quantize activations to q8_K too */
    slm__vocab vocab;
    int n_meta;
    const char **meta;   /* key, value, key, value... */
    const void *kernels; /* SLM_DISPATCH: the slm__kernel_set its passes run */
};
static int slm__kernels_choose(const char *want, const char **name, const void **set);

typedef struct slm__loader {
    slm_model *m;
    char *error;
    size_t error_cap;
    /* desc's, not m's: a failure is logged when m could not be allocated or was just freed */
    slm_log_fn log;
    void *log_user;
} slm__loader;

static void slm__log(slm_log_fn fn, void *user, int level, const char *fmt, ...) {
    char msg[SLM__MSG_MAX];
    va_list ap;
    if (!fn) return;
    va_start(ap, fmt);
    slm__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fn(user, level, msg);
}

static slm_result slm__load_fail(slm__loader *ld, slm_result code, const char *fmt, ...) {
    char msg[SLM__MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    slm__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ld->error && ld->error_cap) slm__format(ld->error, ld->error_cap, "%s", msg);
    slm__log(ld->log, ld->log_user, SLM_LOG_ERROR, "%s", msg);
    return code;
}

/* Little-endian reads, independent of the host's byte order and alignment. */
SLM__SHARED uint16_t slm__rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
SLM__SHARED uint32_t slm__rd32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
SLM__SHARED int32_t slm__rdi32(const uint8_t *p) {
    uint32_t u = slm__rd32(p); /* two's complement without an implementation-defined cast */
    return u <= 0x7fffffffu ? (int32_t)u : -(int32_t)(0xffffffffu - u) - 1;
}
SLM__SHARED uint64_t slm__rd64(const uint8_t *p) { return (uint64_t)slm__rd32(p) | ((uint64_t)slm__rd32(p + 4) << 32); }
SLM__SHARED float slm__rdf32(const uint8_t *p) { return slm__bits_f32(slm__rd32(p)); }

/* off/size describe a range inside a file of file_size bytes, overflow-safe. */
static int slm__range_ok(uint64_t off, uint64_t size, uint64_t file_size) {
    return off <= file_size && size <= file_size - off;
}

static int slm__host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

#ifndef SLM_NO_STDIO
/* A 32-bit build without large-file support cannot even open a file of 2 GiB
   or more; with it (or on 64 bits), a file beyond the address space is
   refused by its size below. */
#define SLM__LARGE_FILE_MSG \
    "'%s' is 2 GiB or more, too large for this build's 32-bit file offsets (build with -D_FILE_OFFSET_BITS=64)"
#if defined(SLM__MMAP_WIN32)
/* Paths are UTF-8, as everywhere in the API. The ANSI calls (fopen,
   CreateFileA) would read them in the system's code page, so they go
   through the wide-character calls. A path that is not valid UTF-8 is taken
   to be in that code page (what argv holds in a program built without a
   UTF-8 manifest). *oom: the allocator said no. */
static HANDLE slm__open_utf8(const slm_allocator *a, const char *path, int write, int *oom) {
    DWORD access = write ? GENERIC_WRITE : GENERIC_READ, share = write ? 0 : FILE_SHARE_READ;
    DWORD how = write ? CREATE_ALWAYS : OPEN_EXISTING;
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    wchar_t *wide;
    HANDLE h;
    *oom = 0;
    if (n <= 0) return CreateFileA(path, access, share, NULL, how, FILE_ATTRIBUTE_NORMAL, NULL);
    if (!(wide = (wchar_t *)slm__alloc(a, (size_t)n * sizeof(wchar_t)))) {
        *oom = 1;
        return INVALID_HANDLE_VALUE;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wide, n);
    h = CreateFileW(wide, access, share, NULL, how, FILE_ATTRIBUTE_NORMAL, NULL);
    slm__free(a, wide);
    return h;
}

/* ReadFile takes at most 4 GiB - 1 at once: a larger read is a loop. */
static int slm__read_all(HANDLE h, uint8_t *buf, size_t n, size_t *got) {
    *got = 0;
    while (*got < n) {
        DWORD chunk = (DWORD)SLM__MIN(n - *got, (size_t)1 << 30), r = 0;
        if (!ReadFile(h, buf + *got, chunk, &r, NULL)) return 0;
        if (r == 0) break;
        *got += r;
    }
    return 1;
}
#endif

static slm_result slm__map_file(slm__loader *ld, const char *path, int no_mmap) {
    slm_model *m = ld->m;
#if defined(SLM__MMAP_POSIX)
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused
       below, as are devices); it changes nothing for a regular file. Both
       paths, mapped or read, use this descriptor. */
    struct stat st;
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    /* EOVERFLOW: a file over 2 GiB in a build whose off_t has 32 bits */
    if (fd < 0 && errno == EOVERFLOW) return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, SLM__LARGE_FILE_MSG, path);
    if (fd < 0) return slm__load_fail(ld, SLM_ERR_IO, "cannot open '%s'", path);
    if (fstat(fd, &st) != 0) {
        int too_large = errno == EOVERFLOW;
        close(fd);
        if (too_large) return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, SLM__LARGE_FILE_MSG, path);
        return slm__load_fail(ld, SLM_ERR_IO, "cannot stat '%s'", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)(size_t)-1 - SLM__ALIGN) { /* read or mapped, it would not fit */
        close(fd);
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "'%s' (%llu bytes) is too large for this address space", path,
                              (unsigned long long)st.st_size);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return slm__load_fail(ld, SLM_ERR_IO, "'%s' is not a regular file (a directory, a FIFO or a device)", path);
    }
    if (!no_mmap) {
        void *addr;
        if (st.st_size < SLM__HEADER_SIZE) {
            close(fd);
            return slm__load_fail(ld, SLM_ERR_FORMAT, "'%s' is %llu bytes, smaller than the %d-byte .slm header", path,
                                  (unsigned long long)st.st_size, SLM__HEADER_SIZE);
        }
        addr = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            int no_room = errno == ENOMEM; /* a 32-bit process: no free range that large */
            close(fd);
            return slm__load_fail(ld, SLM_ERR_IO, "cannot map '%s' (%llu bytes)%s", path,
                                  (unsigned long long)st.st_size, no_room ? ": not enough address space" : "");
        }
        close(fd);
        m->map_addr = addr;
        m->map_len = (size_t)st.st_size;
        m->file = (const uint8_t *)addr;
        m->file_size = (uint64_t)st.st_size;
        return SLM_OK;
    }
#elif defined(SLM__MMAP_WIN32)
    /* As POSIX above: one handle, checked, then mapped or read. */
    LARGE_INTEGER sz;
    int oom;
    HANDLE f = slm__open_utf8(&m->alloc, path, 0, &oom);
    if (oom) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory opening '%s'", path);
    if (f == INVALID_HANDLE_VALUE) return slm__load_fail(ld, SLM_ERR_IO, "cannot open '%s'", path);
    if (!GetFileSizeEx(f, &sz)) {
        CloseHandle(f);
        return slm__load_fail(ld, SLM_ERR_IO, "cannot stat '%s'", path);
    }
    if (GetFileType(f) != FILE_TYPE_DISK) { /* a pipe, the console, NUL */
        CloseHandle(f);
        return slm__load_fail(ld, SLM_ERR_IO, "'%s' is not a regular file (a directory, a FIFO or a device)", path);
    }
    if ((uint64_t)sz.QuadPart > (uint64_t)(size_t)-1 - SLM__ALIGN) {
        CloseHandle(f);
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "'%s' (%llu bytes) is too large for this address space", path,
                              (unsigned long long)sz.QuadPart);
    }
    if (!no_mmap) {
        HANDLE map;
        void *addr;
        if (sz.QuadPart < SLM__HEADER_SIZE) {
            CloseHandle(f);
            return slm__load_fail(ld, SLM_ERR_FORMAT, "'%s' is %llu bytes, smaller than the %d-byte .slm header", path,
                                  (unsigned long long)sz.QuadPart, SLM__HEADER_SIZE);
        }
        map = CreateFileMappingW(f, NULL, PAGE_READONLY, 0, 0, NULL);
        CloseHandle(f); /* the mapping keeps the file open */
        if (!map) return slm__load_fail(ld, SLM_ERR_IO, "cannot map '%s'", path);
        addr = MapViewOfFile(map, FILE_MAP_READ, 0, 0, 0);
        if (!addr) {
            CloseHandle(map);
            return slm__load_fail(ld, SLM_ERR_IO, "cannot map '%s' (%llu bytes): not enough address space?", path,
                                  (unsigned long long)sz.QuadPart);
        }
        m->map_handle = map;
        m->map_addr = addr;
        m->map_len = (size_t)sz.QuadPart;
        m->file = (const uint8_t *)addr;
        m->file_size = (uint64_t)sz.QuadPart;
        return SLM_OK;
    }
#endif
    {
        /* Read into a 64-byte aligned buffer, growing as we go: no ftell, so
           files over 2 GiB on 32-bit longs work too. POSIX reads the
           descriptor opened and checked above (no second open that could
           meet a FIFO), Windows its handle; elsewhere stdio. */
#if defined(SLM__MMAP_POSIX)
#define SLM__READ_CLOSE() close(fd)
#elif defined(SLM__MMAP_WIN32)
#define SLM__READ_CLOSE() CloseHandle(f)
#else
        FILE *f = fopen(path, "rb");
#define SLM__READ_CLOSE() fclose(f)
#endif
        size_t cap = 1 << 20, len = 0;
        uint8_t *buf = NULL;
        int read_error = 0;
        (void)no_mmap;
#if defined(SLM__MMAP_POSIX)
        /* The regular file's size (fstat above) sizes the buffer: one byte
           more than the file so that the read ends without growing it, and no
           request larger than the file (doubling would ask for up to twice). */
        if (st.st_size >= 0 && (uint64_t)st.st_size < (uint64_t)((size_t)-1 / 2 - SLM__ALIGN))
            cap = (size_t)st.st_size + 1;
#elif defined(SLM__MMAP_WIN32)
        if (sz.QuadPart >= 0 && (uint64_t)sz.QuadPart < (uint64_t)((size_t)-1 / 2 - SLM__ALIGN))
            cap = (size_t)sz.QuadPart + 1;
#else
        if (!f) return slm__load_fail(ld, SLM_ERR_IO, "cannot open '%s'", path);
#endif
        for (;;) {
            size_t got;
            if (!buf || len == cap) {
                uint8_t *nb;
                if (buf) {
                    if (cap > ((size_t)-1 - SLM__ALIGN) / 2) {
                        SLM__READ_CLOSE();
                        return slm__load_fail(ld, SLM_ERR_OOM, "'%s' is too large to read into memory", path);
                    }
                    cap *= 2;
                }
                nb = (uint8_t *)slm__alloc(&m->alloc, cap + SLM__ALIGN);
                if (!nb) {
                    SLM__READ_CLOSE();
                    return slm__load_fail(ld, SLM_ERR_OOM, "out of memory reading '%s'", path);
                }
                {
                    uint8_t *aligned = nb + ((SLM__ALIGN - ((uintptr_t)nb % SLM__ALIGN)) % SLM__ALIGN);
                    if (buf) memcpy(aligned, buf, len);
                    slm__free(&m->alloc, m->owned);
                    m->owned = nb;
                    buf = aligned;
                }
            }
#if defined(SLM__MMAP_POSIX)
            {
                ssize_t r = read(fd, buf + len, cap - len);
                if (r < 0) read_error = 1;
                got = r > 0 ? (size_t)r : 0;
            }
#elif defined(SLM__MMAP_WIN32)
            if (!slm__read_all(f, buf + len, cap - len, &got)) read_error = 1;
#else
            got = fread(buf + len, 1, cap - len, f);
            if (got == 0 && ferror(f)) read_error = 1;
#endif
            len += got;
            if (got == 0) break;
        }
        SLM__READ_CLOSE();
#undef SLM__READ_CLOSE
        if (read_error) return slm__load_fail(ld, SLM_ERR_IO, "error reading '%s'", path);
        m->file = buf;
        m->file_size = len;
        return SLM_OK;
    }
}
#endif

static void slm__unmap(slm_model *m) {
#if defined(SLM__MMAP_POSIX)
    if (m->map_addr) munmap(m->map_addr, m->map_len);
#elif defined(SLM__MMAP_WIN32)
    if (m->map_addr) {
        UnmapViewOfFile(m->map_addr);
        CloseHandle(m->map_handle);
    }
#endif
    m->map_addr = NULL;
}

static slm__tensor *slm__find_tensor(const slm_model *m, const char *name) {
    int lo = 0, hi = m->n_tensors; /* by_name[lo..hi) may hold it */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(m->by_name[mid]->name, name);
        if (c == 0) return m->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* A required (or, with `optional`, possibly absent) tensor of an exact shape and an allowed type. */
static slm_result slm__bind_tensor(slm__loader *ld, const slm__tensor **out, const char *name, int64_t ne0, int64_t ne1,
                                   int float_only, int optional) {
    slm__tensor *t = slm__find_tensor(ld->m, name);
    *out = t;
    if (!t) return optional ? SLM_OK : slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' is missing", name);
    t->used = 1;
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return slm__load_fail(ld, SLM_ERR_FORMAT,
                              "tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name,
                              (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                              (long long)ne0, (long long)ne1);
    if (float_only && t->type != SLM_TYPE_F32)
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "tensor '%s' is %s; norms and biases must be f32", name,
                              slm_type_name(t->type));
    return SLM_OK;
}

static int slm__tensor_name_cmp(const void *a, const void *b) {
    return strcmp((*(const slm__tensor *const *)a)->name, (*(const slm__tensor *const *)b)->name);
}

/* GGML's name of a type number, for the message about a type slm.h does not run. */
static const char *slm__ggml_type_label(uint32_t type) {
    static const char *const names[] = { "F32",     "F16",    "Q4_0",    "Q4_1",  "Q4_2",   "Q4_3",  "Q5_0",  "Q5_1",
                                         "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",  "Q4_K",   "Q5_K",  "Q6_K",  "Q8_K",
                                         "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                                         "I8",      "I16",    "I32",     "I64",   "F64",    "IQ1_M", "BF16" };
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown number";
}

static slm_result slm__parse_tensors(slm__loader *ld, uint64_t dir_off, uint64_t dir_size, uint32_t n_tensors) {
    slm_model *m = ld->m;
    uint32_t i;
    int d;
    if (dir_off % SLM__SECT_ALIGN)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor directory offset %llu is not %d-byte aligned",
                              (unsigned long long)dir_off, SLM__SECT_ALIGN);
    if ((uint64_t)n_tensors > dir_size / SLM__TENSOR_ENTRY_SIZE)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor directory of %llu bytes cannot hold %u tensors",
                              (unsigned long long)dir_size, n_tensors);
    if (n_tensors == 0) return SLM_OK;
    m->tensors = (slm__tensor *)slm__calloc(&m->alloc, n_tensors, sizeof(slm__tensor));
    if (!m->tensors) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for %u tensors", n_tensors);
    m->n_tensors = (int)n_tensors;
    for (i = 0; i < n_tensors; i++) {
        const uint8_t *e = m->file + dir_off + (uint64_t)i * SLM__TENSOR_ENTRY_SIZE;
        slm__tensor *t = &m->tensors[i];
        uint64_t rows = 1, row_size;
        if (!memchr(e + SLM__E_NAME, 0, SLM__TENSOR_NAME_MAX))
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor %u: name is not NUL-terminated", i);
        t->name = (const char *)e + SLM__E_NAME;
        t->type = (int)slm__rd32(e + SLM__E_TYPE);
        t->n_dims = (int)slm__rd32(e + SLM__E_N_DIMS);
        t->offset = slm__rd64(e + SLM__E_OFFSET);
        if (!slm_type_name(t->type))
            return slm__load_fail(ld, SLM_ERR_UNSUPPORTED,
                                  "tensor '%s' has type %u (GGML's %s), which slm.h %s (format %d.%d) does not run",
                                  t->name, (unsigned)t->type, slm__ggml_type_label((uint32_t)t->type),
                                  SLM_VERSION_STRING, SLM_FORMAT_VERSION_MAJOR, SLM_FORMAT_VERSION_MINOR);
        if (slm__rd32(e + SLM__E_N_DIMS) < 1 || slm__rd32(e + SLM__E_N_DIMS) > 4)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s': %u dimensions", t->name,
                                  (unsigned)slm__rd32(e + SLM__E_N_DIMS));
        for (d = 0; d < 4; d++) {
            uint32_t ne = slm__rd32(e + SLM__E_NE + 4 * d);
            if (ne == 0 || (d >= t->n_dims && ne != 1))
                return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s': dimension %d is %u", t->name, d, ne);
            t->ne[d] = ne;
            if (d > 0) {
                if (rows > m->file_size / ne)
                    return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' is larger than the file", t->name);
                rows *= ne;
            }
        }
        row_size = slm_type_row_size(t->type, t->ne[0]);
        if (!row_size)
            return slm__load_fail(ld, SLM_ERR_FORMAT,
                                  "tensor '%s': row length %lld is not a multiple of the %s block of %d", t->name,
                                  (long long)t->ne[0], slm_type_name(t->type), slm_type_block_size(t->type));
        if (rows > m->file_size / row_size)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' is larger than the file", t->name);
        if (slm__type_is_r16(t->type) && rows % SLM__R16)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s': %llu rows cannot be interleaved by %d", t->name,
                                  (unsigned long long)rows, SLM__R16);
        t->size = rows * row_size;
        t->row_size = (size_t)row_size;
        if (t->offset % SLM__DATA_ALIGN)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s': offset %llu is not %d-byte aligned", t->name,
                                  (unsigned long long)t->offset, SLM__DATA_ALIGN);
        if (!slm__range_ok(t->offset, t->size, m->file_size))
            return slm__load_fail(ld, SLM_ERR_FORMAT,
                                  "tensor '%s': bytes %llu..%llu are past the end of the %llu-byte file", t->name,
                                  (unsigned long long)t->offset, (unsigned long long)(t->offset + t->size),
                                  (unsigned long long)m->file_size);
        if (t->offset < SLM__HEADER_SIZE)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' overlaps the header", t->name);
        t->data = m->file + t->offset;
    }
    /* one name, one tensor: the second of two would never be read, and which one
       a lookup finds would depend on the sort */
    m->by_name = (slm__tensor **)slm__alloc(&m->alloc, (size_t)n_tensors * sizeof(slm__tensor *));
    if (!m->by_name) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for %u tensors", n_tensors);
    for (i = 0; i < n_tensors; i++) m->by_name[i] = &m->tensors[i];
    qsort(m->by_name, n_tensors, sizeof(slm__tensor *), slm__tensor_name_cmp);
    for (i = 1; i < n_tensors; i++)
        if (strcmp(m->by_name[i - 1]->name, m->by_name[i]->name) == 0)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' appears twice in the directory",
                                  m->by_name[i]->name);
    return SLM_OK;
}

/* A byte range of the file that belongs to one thing: the header, a section or a tensor. */
typedef struct slm__extent {
    uint64_t begin, end;
    const char *what, *name; /* "tensor" and its name, or a section's description and NULL */
} slm__extent;

static int slm__extent_cmp(const void *a, const void *b) {
    const slm__extent *x = (const slm__extent *)a, *y = (const slm__extent *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end ? 1 : 0;
}

/* Sections and tensors must not share bytes (FORMAT.md). Shared bytes are how
   a small file could declare a large model (hundreds of layers over one
   blob) and make slm_session_new reserve memory out of all proportion to it;
   refusing them keeps what a file declares no larger than the file. Sorting
   by start makes this O(n log n): a range overlaps an earlier one exactly
   when it starts before the furthest end seen so far. */
static slm_result slm__check_extents(slm__loader *ld, uint64_t header_size, uint64_t tok_off, uint64_t tok_size,
                                     uint64_t meta_off, uint64_t meta_size, uint64_t dir_off, uint64_t dir_size) {
    slm_model *m = ld->m;
    size_t n = 0, i, furthest = 0;
    slm__extent *e = (slm__extent *)slm__alloc(&m->alloc, ((size_t)m->n_tensors + 4) * sizeof(slm__extent));
    if (!e) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory checking %d tensors", m->n_tensors);
#define SLM__EXTENT(b, size, w, nm) \
    if ((size) > 0) {               \
        e[n].begin = (b);           \
        e[n].end = (b) + (size);    \
        e[n].what = (w);            \
        e[n].name = (nm);           \
        n++;                        \
    }
    SLM__EXTENT(0, header_size, "the header", NULL)
    SLM__EXTENT(tok_off, tok_size, "the tokenizer section", NULL)
    SLM__EXTENT(meta_off, meta_size, "the metadata section", NULL)
    SLM__EXTENT(dir_off, dir_size, "the tensor directory", NULL)
    for (i = 0; i < (size_t)m->n_tensors; i++) {
        const slm__tensor *t = &m->tensors[i];
        SLM__EXTENT(t->offset, t->size, "tensor", t->name)
    }
#undef SLM__EXTENT
    qsort(e, n, sizeof *e, slm__extent_cmp);
    for (i = 1; i < n; i++) {
        if (e[i].begin < e[furthest].end) {
            char a[SLM__TENSOR_NAME_MAX + 16], b[SLM__TENSOR_NAME_MAX + 16];
            slm_result r;
            slm__format(a, sizeof a, e[furthest].name ? "tensor '%s'" : "%s",
                        e[furthest].name ? e[furthest].name : e[furthest].what);
            slm__format(b, sizeof b, e[i].name ? "tensor '%s'" : "%s", e[i].name ? e[i].name : e[i].what);
            r = slm__load_fail(ld, SLM_ERR_FORMAT, "%s (bytes %llu..%llu) overlaps %s (bytes %llu..%llu)", b,
                               (unsigned long long)e[i].begin, (unsigned long long)e[i].end, a,
                               (unsigned long long)e[furthest].begin, (unsigned long long)e[furthest].end);
            slm__free(&m->alloc, e);
            return r;
        }
        if (e[i].end > e[furthest].end) furthest = i;
    }
    slm__free(&m->alloc, e);
    return SLM_OK;
}

static slm_result slm__bind_layers(slm__loader *ld) {
    slm_model *m = ld->m;
    slm_model_info *in = &m->info;
    int64_t dim = in->dim, q_dim = (int64_t)in->n_heads * in->head_dim, kv_dim = (int64_t)in->n_kv_heads * in->head_dim;
    int64_t ffn = in->ffn_dim;
    int l, bias = in->qkv_bias, qkn = in->qk_norm;
    slm_result r;
    char name[SLM__TENSOR_NAME_MAX];
    m->layers = (slm__layer *)slm__calloc(&m->alloc, (size_t)in->n_layers, sizeof(slm__layer));
    if (!m->layers) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for %d layers", in->n_layers);
#define SLM__BIND(field, suffix, ne0, ne1, float_only, present)                                                     \
    slm__format(name, sizeof name, "blk.%d." suffix, l);                                                            \
    if ((r = slm__bind_tensor(ld, &L->field, name, ne0, ne1, float_only, !(present))) != SLM_OK) return r;          \
    if (!(present) && L->field)                                                                                     \
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' is present but the header flags say it is not used", \
                              name);
    for (l = 0; l < in->n_layers; l++) {
        slm__layer *L = &m->layers[l];
        SLM__BIND(attn_norm, "attn_norm.weight", dim, 1, 1, 1)
        SLM__BIND(wq, "attn_q.weight", dim, q_dim, 0, 1)
        SLM__BIND(wk, "attn_k.weight", dim, kv_dim, 0, 1)
        SLM__BIND(wv, "attn_v.weight", dim, kv_dim, 0, 1)
        SLM__BIND(wo, "attn_output.weight", q_dim, dim, 0, 1)
        SLM__BIND(bq, "attn_q.bias", q_dim, 1, 1, bias)
        SLM__BIND(bk, "attn_k.bias", kv_dim, 1, 1, bias)
        SLM__BIND(bv, "attn_v.bias", kv_dim, 1, 1, bias)
        SLM__BIND(q_norm, "attn_q_norm.weight", in->head_dim, 1, 1, qkn)
        SLM__BIND(k_norm, "attn_k_norm.weight", in->head_dim, 1, 1, qkn)
        SLM__BIND(ffn_norm, "ffn_norm.weight", dim, 1, 1, 1)
        SLM__BIND(w_gate, "ffn_gate.weight", dim, ffn, 0, 1)
        SLM__BIND(w_up, "ffn_up.weight", dim, ffn, 0, 1)
        SLM__BIND(w_down, "ffn_down.weight", ffn, dim, 0, 1)
    }
#undef SLM__BIND
    if ((r = slm__bind_tensor(ld, &m->tok_embd, "token_embd.weight", dim, in->n_vocab, 0, 0)) != SLM_OK) return r;
    if ((r = slm__bind_tensor(ld, &m->output_norm, "output_norm.weight", dim, 1, 1, 0)) != SLM_OK) return r;
    if ((r = slm__bind_tensor(ld, &m->output, "output.weight", dim, in->n_vocab, 0, in->tied_embeddings)) != SLM_OK)
        return r;
    if (in->tied_embeddings) {
        if (m->output)
            return slm__load_fail(ld, SLM_ERR_FORMAT,
                                  "'output.weight' is present but the header says the embeddings are tied");
        m->output = m->tok_embd;
    }
    return SLM_OK;
}

static slm_result slm__parse_metadata(slm__loader *ld, uint64_t off, uint64_t size) {
    slm_model *m = ld->m;
    const uint8_t *p = m->file + off, *end = p + size;
    uint32_t count, i;
    if (size == 0) return SLM_OK;
    if (size < 4)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata section of %llu bytes is truncated",
                              (unsigned long long)size);
    count = slm__rd32(p);
    p += 4;
    if ((uint64_t)count > (size - 4) / 10)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata section claims %u entries in %llu bytes", count,
                              (unsigned long long)size);
    if (count == 0) return SLM_OK;
    m->meta = (const char **)slm__calloc(&m->alloc, (size_t)count * 2, sizeof(char *));
    if (!m->meta) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for metadata");
    for (i = 0; i < count * 2; i++) {
        uint32_t len;
        if (end - p < 4) return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata entry %u is truncated", i / 2);
        len = slm__rd32(p);
        p += 4;
        if ((uint64_t)len >= (uint64_t)(end - p) || p[len] != 0)
            return slm__load_fail(ld, SLM_ERR_FORMAT,
                                  "metadata entry %u: string of %u bytes overruns the section or lacks its NUL", i / 2,
                                  len);
        m->meta[i] = (const char *)p;
        p += len + 1;
    }
    m->n_meta = (int)count;
    return SLM_OK;
}

/* The FIM padding, repository and file-separator ids, which the tokenizer
   header has no room for, are metadata entries "tokenizer.fim_pad",
   "tokenizer.fim_rep" and "tokenizer.fim_sep" holding a decimal token id. */
static slm_result slm__parse_fim_meta(slm__loader *ld) {
    static const char *const keys[3] = { "tokenizer.fim_pad", "tokenizer.fim_rep", "tokenizer.fim_sep" };
    slm__vocab *v = &ld->m->vocab;
    slm_token *ids[3];
    int k;
    ids[0] = &v->fim_pad;
    ids[1] = &v->fim_rep;
    ids[2] = &v->fim_sep;
    for (k = 0; k < 3; k++) {
        const char *t = slm_model_meta(ld->m, keys[k]);
        long id = 0;
        *ids[k] = -1;
        if (!t) continue;
        if (!*t) return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata %s is empty", keys[k]);
        for (; *t; t++) {
            if (*t < '0' || *t > '9' || id > (long)SLM__MAX_TOKENS)
                return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata %s is not a token id", keys[k]);
            id = id * 10 + (*t - '0');
        }
        if (id >= v->n_tokens)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "metadata %s: token id %d is out of range", keys[k], (int)id);
        *ids[k] = (slm_token)id;
    }
    return SLM_OK;
}

static slm_result slm__parse_vocab(slm__loader *ld, uint64_t off, uint64_t size);
static slm_result slm__build_vocab_tables(slm__loader *ld);

static slm_result slm__parse_file(slm__loader *ld) {
    slm_model *m = ld->m;
    slm_model_info *in = &m->info;
    const uint8_t *h = m->file;
    uint32_t major, minor, header_size, arch, flags, n_tensors, u;
    uint64_t tok_off, tok_size, meta_off, meta_size, dir_off, dir_size;
    slm_result r;
    int i;

    if (m->file_size < SLM__HEADER_SIZE)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "file is %llu bytes, smaller than the %d-byte .slm header",
                              (unsigned long long)m->file_size, SLM__HEADER_SIZE);
    if (memcmp(h + SLM__H_MAGIC, SLM__MAGIC, SLM__MAGIC_SIZE) != 0) {
        if (memcmp(h, "GGUF", 4) == 0)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "this is a GGUF file; convert it with slm-convert first");
        return slm__load_fail(ld, SLM_ERR_FORMAT, "not a .slm file (bad magic)");
    }
    major = slm__rd16(h + SLM__H_VERSION_MAJOR);
    minor = slm__rd16(h + SLM__H_VERSION_MINOR);
    in->format_major = (int)major;
    in->format_minor = (int)minor;
    if (major > SLM_FORMAT_VERSION_MAJOR)
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED,
                              "file format version %u.%u is newer than this library's %d.%d; update slm.h", major,
                              minor, SLM_FORMAT_VERSION_MAJOR, SLM_FORMAT_VERSION_MINOR);
    if (major == 0) return slm__load_fail(ld, SLM_ERR_FORMAT, "file format version 0 does not exist");
    header_size = slm__rd32(h + SLM__H_HEADER_SIZE);
    if (header_size < SLM__HEADER_SIZE || header_size > m->file_size)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "header size %u is out of range", header_size);
    arch = slm__rd32(h + SLM__H_ARCH);
    if (arch < SLM_ARCH_LLAMA || arch > SLM_ARCH_QWEN3)
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "unknown architecture id %u", arch);
    in->arch = (int)arch;
    in->arch_name = arch == SLM_ARCH_LLAMA ? "llama" : arch == SLM_ARCH_QWEN2 ? "qwen2" : "qwen3";

    { /* hyper-parameters: bounds that keep every product below 2^62 */
        static const char *const names[] = { "n_vocab",    "dim",      "n_layers", "n_heads",
                                             "n_kv_heads", "head_dim", "ffn_dim",  "max_seq" };
        static const uint32_t limits[] = { SLM__MAX_TOKENS, SLM__MAX_DIM,      SLM__MAX_LAYERS,  SLM__MAX_HEADS,
                                           SLM__MAX_HEADS,  SLM__MAX_HEAD_DIM, SLM__MAX_FFN_DIM, SLM__MAX_SEQ };
        int *fields[8];
        fields[0] = &in->n_vocab;
        fields[1] = &in->dim;
        fields[2] = &in->n_layers;
        fields[3] = &in->n_heads;
        fields[4] = &in->n_kv_heads;
        fields[5] = &in->head_dim;
        fields[6] = &in->ffn_dim;
        fields[7] = &in->max_seq;
        n_tensors = slm__rd32(h + SLM__H_N_TENSORS);
        for (i = 0; i < 8; i++) {
            u = slm__rd32(h + SLM__H_N_VOCAB + 4 * i);
            if (u > limits[i] || (u == 0 && n_tensors > 0))
                return slm__load_fail(ld, SLM_ERR_FORMAT, "%s = %u is out of range (1..%u)", names[i], u, limits[i]);
            *fields[i] = (int)u;
        }
    }
    in->rope_theta = slm__rdf32(h + SLM__H_ROPE_THETA);
    in->rope_freq_scale = slm__rdf32(h + SLM__H_ROPE_FREQ_SCALE);
    in->norm_eps = slm__rdf32(h + SLM__H_NORM_EPS);
    flags = slm__rd32(h + SLM__H_FLAGS);
    in->tied_embeddings = (flags & SLM__FLAG_TIED) != 0;
    in->qkv_bias = (flags & SLM__FLAG_QKV_BIAS) != 0;
    in->qk_norm = (flags & SLM__FLAG_QK_NORM) != 0;
    in->rope_kind = (int)slm__rd32(h + SLM__H_ROPE_KIND);
    in->n_tensors = (int)n_tensors;
    if (n_tensors > 0) {
        if (in->n_heads % in->n_kv_heads)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "n_heads %d is not a multiple of n_kv_heads %d", in->n_heads,
                                  in->n_kv_heads);
        if (in->head_dim % 2) return slm__load_fail(ld, SLM_ERR_FORMAT, "head_dim %d is odd", in->head_dim);
        if (!(in->rope_theta > 0.0f && in->rope_theta < 1e30f) ||
            !(in->rope_freq_scale > 0.0f && in->rope_freq_scale < 1e30f) ||
            !(in->norm_eps >= 0.0f && in->norm_eps < 1.0f))
            return slm__load_fail(ld, SLM_ERR_FORMAT, "rope theta %g, rope scale %g or norm epsilon %g is out of range",
                                  (double)in->rope_theta, (double)in->rope_freq_scale, (double)in->norm_eps);
        if (slm__rd32(h + SLM__H_ACTIVATION) != 0)
            return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "activation %u is not supported",
                                  slm__rd32(h + SLM__H_ACTIVATION));
        if (in->rope_kind != 0 && in->rope_kind != 1)
            return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "rope kind %d is not supported", in->rope_kind);
        if (flags & ~(SLM__FLAG_TIED | SLM__FLAG_QKV_BIAS | SLM__FLAG_QK_NORM))
            return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "unknown model flags 0x%x", flags);
    }
    tok_off = slm__rd64(h + SLM__H_TOKENIZER_OFFSET);
    tok_size = slm__rd64(h + SLM__H_TOKENIZER_SIZE);
    meta_off = slm__rd64(h + SLM__H_METADATA_OFFSET);
    meta_size = slm__rd64(h + SLM__H_METADATA_SIZE);
    dir_off = slm__rd64(h + SLM__H_TENSORS_OFFSET);
    dir_size = slm__rd64(h + SLM__H_TENSORS_SIZE);
    if (!slm__range_ok(tok_off, tok_size, m->file_size) || tok_off < header_size)
        return slm__load_fail(
            ld, SLM_ERR_FORMAT, "tokenizer section (offset %llu, %llu bytes) is outside the %llu-byte file",
            (unsigned long long)tok_off, (unsigned long long)tok_size, (unsigned long long)m->file_size);
    if (!slm__range_ok(meta_off, meta_size, m->file_size) || (meta_size && meta_off < header_size))
        return slm__load_fail(
            ld, SLM_ERR_FORMAT, "metadata section (offset %llu, %llu bytes) is outside the %llu-byte file",
            (unsigned long long)meta_off, (unsigned long long)meta_size, (unsigned long long)m->file_size);
    if (!slm__range_ok(dir_off, dir_size, m->file_size) || (dir_size && dir_off < header_size))
        return slm__load_fail(
            ld, SLM_ERR_FORMAT, "tensor directory (offset %llu, %llu bytes) is outside the %llu-byte file",
            (unsigned long long)dir_off, (unsigned long long)dir_size, (unsigned long long)m->file_size);
    if ((r = slm__parse_vocab(ld, tok_off, tok_size)) != SLM_OK) return r;
    if ((r = slm__parse_metadata(ld, meta_off, meta_size)) != SLM_OK) return r;
    if ((r = slm__parse_fim_meta(ld)) != SLM_OK) return r;
    if ((r = slm__parse_tensors(ld, dir_off, dir_size, n_tensors)) != SLM_OK) return r;
    if ((r = slm__check_extents(ld, header_size, tok_off, tok_size, meta_off, meta_size, dir_off, dir_size)) != SLM_OK)
        return r;
    if (n_tensors > 0) {
        if (m->vocab.n_tokens > in->n_vocab)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer has %d tokens but the model only %d",
                                  m->vocab.n_tokens, in->n_vocab);
        if ((r = slm__bind_layers(ld)) != SLM_OK) return r;
        /* A tensor no architecture reads is a writer's mistake in a file of
           this version or older; a newer minor version may add optional
           tensors that this loader does not know, and runs without them. */
        for (i = 0; i < m->n_tensors; i++) {
            const slm__tensor *t = &m->tensors[i];
            if (t->used) continue;
            if (major < SLM_FORMAT_VERSION_MAJOR || minor <= SLM_FORMAT_VERSION_MINOR)
                return slm__load_fail(ld, SLM_ERR_FORMAT, "tensor '%s' is not used by a %s model of these dimensions",
                                      t->name, in->arch_name);
            slm__log(m->log, m->log_user, SLM_LOG_WARN,
                     "tensor '%s' is unknown to this loader (file format %u.%u, slm.h reads %d.%d): ignored", t->name,
                     major, minor, SLM_FORMAT_VERSION_MAJOR, SLM_FORMAT_VERSION_MINOR);
        }
    } else {
        in->n_vocab = m->vocab.n_tokens;
    }
    if ((r = slm__build_vocab_tables(ld)) != SLM_OK) return r;

    { /* summary figures for slm_model_info; block types are GGML numbers, bf16 the highest */
        uint64_t by_type[SLM_TYPE_BF16 + 1] = { 0 };
        uint64_t best = 0;
        in->weight_type = -1;
        for (i = 0; i < m->n_tensors; i++) {
            const slm__tensor *t = &m->tensors[i];
            uint64_t n = (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
            if (!t->used) continue; /* ignored: a newer minor version's tensor */
            in->n_params += n;
            if (t->type == SLM_TYPE_Q4_K || t->type == SLM_TYPE_Q5_K || t->type == SLM_TYPE_Q6_K) m->has_kquant = 1;
            if (t->ne[1] > 1 && slm__block_type(t->type) <= SLM_TYPE_BF16) by_type[slm__block_type(t->type)] += n;
        }
        for (i = 0; i <= SLM_TYPE_BF16; i++)
            if (by_type[i] > best) {
                best = by_type[i];
                in->weight_type = i;
            }
    }
    in->file_size = m->file_size;
    in->tokenizer_kind = m->vocab.kind;
    in->n_tokens = m->vocab.n_tokens;
    in->bos = m->vocab.bos;
    in->eos = m->vocab.eos;
    in->eot = m->vocab.eot;
    in->pad = m->vocab.pad;
    in->unk = m->vocab.unk;
    in->add_bos = (m->vocab.flags & SLM__TOKFLAG_ADD_BOS) != 0 && m->vocab.bos >= 0;
    in->chat_template = m->vocab.chat_template;
    in->fim_pre = m->vocab.fim_pre;
    in->fim_suf = m->vocab.fim_suf;
    in->fim_mid = m->vocab.fim_mid;
    in->fim_pad = m->vocab.fim_pad;
    in->fim_rep = m->vocab.fim_rep;
    in->fim_sep = m->vocab.fim_sep;
    in->name = slm_model_meta(m, "name");
    if (!in->name) in->name = "";
    return SLM_OK;
}

SLM_API const char *slm_model_meta(const slm_model *m, const char *key) {
    int i;
    if (!m || !key) return NULL;
    for (i = 0; i < m->n_meta; i++)
        if (strcmp(m->meta[2 * i], key) == 0) return m->meta[2 * i + 1];
    return NULL;
}

SLM_API void slm_model_free(slm_model *m) {
    slm_allocator a;
    if (!m) return;
    a = m->alloc;
    slm__unmap(m);
    slm__free(&a, m->owned);
    slm__free(&a, m->tensors);
    slm__free(&a, m->by_name);
    slm__free(&a, m->layers);
    slm__free(&a, (void *)m->meta);
    slm__free(&a, m->vocab.hash);
    slm__free(&a, m->vocab.merge_hash);
    slm__free(&a, m->vocab.piece);
    slm__free(&a, m->vocab.piece_off);
    slm__free(&a, m->vocab.special);
    slm__free(&a, m);
}

SLM_API slm_result slm_model_load(slm_model **out, const slm_model_desc *desc) {
    slm__loader ld;
    slm_allocator a;
    slm_model *m;
    slm_result r;
    if (out) *out = NULL;
    memset(&ld, 0, sizeof ld);
    if (desc) {
        ld.error = desc->error;
        ld.error_cap = desc->error_cap;
        ld.log = desc->log;
        ld.log_user = desc->log_user;
    }
    if (ld.error && ld.error_cap) ld.error[0] = 0;
    if (!out || !desc) return slm__load_fail(&ld, SLM_ERR_INVALID_ARG, "slm_model_load: out and desc are required");
    if ((desc->path != NULL) == (desc->data != NULL))
        return slm__load_fail(&ld, SLM_ERR_INVALID_ARG, "slm_model_load: set exactly one of desc.path and desc.data");
    if ((desc->alloc.alloc != NULL) != (desc->alloc.free != NULL))
        return slm__load_fail(&ld, SLM_ERR_INVALID_ARG, "slm_model_load: desc.alloc.%s is set, desc.alloc.%s is not",
                              desc->alloc.alloc ? "alloc" : "free", desc->alloc.alloc ? "free" : "alloc");
    if (!slm__host_is_little_endian())
        return slm__load_fail(&ld, SLM_ERR_UNSUPPORTED, "big-endian hosts are not supported");
    a = slm__allocator_or_default(desc->alloc);
    m = (slm_model *)slm__calloc(&a, 1, sizeof(slm_model));
    if (!m) return slm__load_fail(&ld, SLM_ERR_OOM, "out of memory");
    m->alloc = a;
    m->log = desc->log;
    m->log_user = desc->log_user;
    ld.m = m;
    if (desc->data) {
        if ((uintptr_t)desc->data % SLM__ALIGN == 0) {
            m->file = (const uint8_t *)desc->data;
        } else {
            /* tensors are read in place as floats: give them their alignment */
            uint8_t *buf = desc->size <= (size_t)-1 - SLM__ALIGN ? (uint8_t *)slm__alloc(&a, desc->size + SLM__ALIGN)
                                                                 : NULL; /* the size would wrap */
            if (!buf) {
                slm_model_free(m);
                return slm__load_fail(&ld, SLM_ERR_OOM, "out of memory copying the %zu-byte model", desc->size);
            }
            m->owned = buf;
            buf += (SLM__ALIGN - ((uintptr_t)buf % SLM__ALIGN)) % SLM__ALIGN;
            memcpy(buf, desc->data, desc->size);
            m->file = buf;
            slm__log(m->log, m->log_user, SLM_LOG_DEBUG, "model bytes are not %d-byte aligned: copied", SLM__ALIGN);
        }
        m->file_size = desc->size;
    } else {
#ifdef SLM_NO_STDIO
        slm_model_free(m);
        return slm__load_fail(&ld, SLM_ERR_UNSUPPORTED, "built with SLM_NO_STDIO: load from desc.data");
#else
        r = slm__map_file(&ld, desc->path, desc->no_mmap);
        if (r != SLM_OK) {
            slm_model_free(m);
            return r;
        }
#endif
    }
    r = slm__parse_file(&ld);
    if (r != SLM_OK) {
        slm_model_free(m);
        return r;
    }
    switch (slm__kernels_choose(desc->kernels, &m->info.kernels, &m->kernels)) {
    case 0: break;
    case 1: slm_model_free(m);
#if defined(SLM__DISPATCH)
        return slm__load_fail(&ld, SLM_ERR_UNSUPPORTED,
                              "no kernel set '%s' in this build: it has " SLM__KERNEL_SET_NAMES, desc->kernels);
#else
        return slm__load_fail(&ld, SLM_ERR_UNSUPPORTED,
                              "no kernel set '%s' in this build: it has only %s (chosen when it was compiled; "
                              "SLM_DISPATCH builds have several)",
                              desc->kernels, SLM__SIMD_NAME);
#endif
    default:
        slm_model_free(m);
        return slm__load_fail(&ld, SLM_ERR_UNSUPPORTED, "this CPU cannot run the '%s' kernels", desc->kernels);
    }
    slm__log(m->log, m->log_user, SLM_LOG_INFO, "loaded %s model: %d layers, dim %d, %d tokens", m->info.arch_name,
             m->info.n_layers, m->info.dim, m->info.n_vocab);
    *out = m;
    return SLM_OK;
}

SLM_API const slm_model_info *slm_model_info_get(const slm_model *m) { return m ? &m->info : NULL; }

SLM_API slm_result slm_model_tensor_get(const slm_model *m, int index, slm_tensor_info *out) {
    const slm__tensor *t;
    if (!m || !out || index < 0 || index >= m->n_tensors) return SLM_ERR_INVALID_ARG;
    t = &m->tensors[index];
    out->name = t->name;
    out->type = t->type;
    out->n_dims = t->n_dims;
    memcpy(out->ne, t->ne, sizeof out->ne);
    out->offset = t->offset;
    out->size = t->size;
    return SLM_OK;
}

/* ---- tokenizer -----------------------------------------------------------
   Owns text <-> tokens. The vocabulary lives in the file; at load we add a
   hash from text to id, the decoded bytes of every token, the byte-fallback
   table and the special tokens sorted by text (slm__special_match).
   Encoding is SentencePiece BPE as llama2.c and llama.cpp do it: optional
   dummy leading space, split into UTF-8 characters, repeatedly merge the
   adjacent pair whose joined text is the highest-scoring token (leftmost on
   ties), then byte fallback (else the unknown token, else an error) for what
   is left unknown. A heap keeps that O(n log n) for long prompts. */

/* Decodes one code point as llama.cpp does (lead byte and continuation bytes
   checked, nothing else); an invalid byte reads as U+FFFD and consumes 1. */
static size_t slm__utf8_decode(const uint8_t *s, size_t avail, uint32_t *cp) {
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0 && avail >= 2 && (s[1] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if ((c & 0xF0) == 0xE0 && avail >= 3 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    if ((c & 0xF8) == 0xF0 && avail >= 4 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
        *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
              (s[3] & 0x3Fu);
        return 4;
    }
    *cp = 0xFFFD;
    return 1;
}

static size_t slm__utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's byte-to-Unicode map: printable Latin-1 bytes stand for themselves,
   the other 68 bytes take the code points from 256 up, in byte order. */
static uint32_t slm__byte_to_cp(uint8_t b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256u + b;
    if (b <= 160) return 289u + (b - 127u);
    return 323u; /* 173, the soft hyphen */
}
static int slm__cp_to_byte(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp >= 256 && cp <= 288) return (int)(cp - 256);
    if (cp >= 289 && cp <= 322) return (int)(cp - 289 + 127);
    if (cp == 323) return 173;
    return -1;
}

/* FNV-1a: token texts -> slots of the open-addressing tables. */
SLM__SHARED uint32_t slm__hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

static uint32_t slm__pair_hash(slm_token l, slm_token r) {
    return ((uint32_t)l * 2654435761u) ^ ((uint32_t)r * 2246822519u + 0x9E3779B9u);
}

static const char *slm__vocab_text(const slm__vocab *v, int id, uint32_t *len) {
    *len = v->text_off[id + 1] - v->text_off[id];
    return v->text + v->text_off[id];
}

static slm_token slm__vocab_find(const slm__vocab *v, const char *s, size_t n) {
    uint32_t i = slm__hash_bytes(s, n) & v->hash_mask;
    for (;; i = (i + 1) & v->hash_mask) {
        int32_t id = v->hash[i];
        uint32_t len;
        const char *t;
        if (id < 0) return -1;
        t = slm__vocab_text(v, id, &len);
        if (len == n && memcmp(t, s, n) == 0) return id;
    }
}

static slm_result slm__parse_vocab(slm__loader *ld, uint64_t off, uint64_t size) {
    slm_model *m = ld->m;
    slm__vocab *v = &m->vocab;
    const uint8_t *p = m->file + off;
    uint64_t need;
    uint32_t n, blob, i;
    slm_token *ids[SLM__T_N_SPECIAL];
    if (off % SLM__SECT_ALIGN)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer section offset %llu is not %d-byte aligned",
                              (unsigned long long)off, SLM__SECT_ALIGN);
    if (size < SLM__TOKHDR_SIZE)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer section of %llu bytes is truncated",
                              (unsigned long long)size);
    v->kind = (int)slm__rd32(p + SLM__T_KIND);
    v->pre = (int)slm__rd32(p + SLM__T_PRE);
    n = slm__rd32(p + SLM__T_N_TOKENS);
    v->n_merges = (int)slm__rd32(p + SLM__T_N_MERGES);
    if (v->kind != SLM_TOKENIZER_SPM && v->kind != SLM_TOKENIZER_BPE)
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "unknown tokenizer kind %d", v->kind);
    if (v->kind == SLM_TOKENIZER_BPE && (v->pre < SLM_PRETOK_NONE || v->pre > SLM_PRETOK_STARCODER))
        return slm__load_fail(ld, SLM_ERR_UNSUPPORTED, "unknown pre-tokenizer %d", v->pre);
    if (n == 0 || n > SLM__MAX_TOKENS)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer token count %u is out of range", n);
    if (slm__rd32(p + SLM__T_N_MERGES) > SLM__MAX_MERGES)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer merge count %u is out of range",
                              slm__rd32(p + SLM__T_N_MERGES));
    v->n_tokens = (int)n;
    ids[0] = &v->bos;
    ids[1] = &v->eos;
    ids[2] = &v->eot;
    ids[3] = &v->pad;
    ids[4] = &v->unk;
    ids[5] = &v->fim_pre;
    ids[6] = &v->fim_suf;
    ids[7] = &v->fim_mid;
    for (i = 0; i < SLM__T_N_SPECIAL; i++) {
        int32_t id = slm__rdi32(p + SLM__T_SPECIAL + 4 * i);
        if (id < -1 || id >= (int32_t)n)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "special token id %d is out of range", (int)id);
        *ids[i] = id;
    }
    v->chat_template = (int)slm__rd32(p + SLM__T_CHAT_TEMPLATE);
    v->flags = slm__rd32(p + SLM__T_FLAGS);
    blob = slm__rd32(p + SLM__T_BLOB_SIZE);
    need = SLM__TOKHDR_SIZE + 4ull * n + 4ull * (n + 1) + 8ull * (uint32_t)v->n_merges + n + blob;
    if (need > size)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "tokenizer section needs %llu bytes but has %llu",
                              (unsigned long long)need, (unsigned long long)size);
    v->scores = (const float *)(p + SLM__TOKHDR_SIZE);
    v->text_off = (const uint32_t *)(v->scores + n);
    v->merges = v->text_off + n + 1;
    v->types = (const uint8_t *)(v->merges + 2ull * (uint32_t)v->n_merges);
    v->text = (const char *)(v->types + n);
    if (v->text_off[0] != 0 || v->text_off[n] != blob)
        return slm__load_fail(ld, SLM_ERR_FORMAT, "token text offsets do not span the text blob");
    for (i = 0; i < n; i++) {
        if (v->text_off[i + 1] < v->text_off[i])
            return slm__load_fail(ld, SLM_ERR_FORMAT, "token %u: text offsets decrease", i);
        if (v->types[i] > SLM_TOKEN_BYTE)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "token %u: unknown type %u", i, (unsigned)v->types[i]);
    }
    for (i = 0; i < 2u * (uint32_t)v->n_merges; i++)
        if (v->merges[i] >= n)
            return slm__load_fail(ld, SLM_ERR_FORMAT, "merge %u names token %u of %u", i / 2, v->merges[i], n);
    return SLM_OK;
}

static int slm__hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xXX>" -> XX, else -1; upper- or lower-case hex */
SLM__SHARED int slm__byte_token_value(const char *t, uint32_t len) {
    int hi, lo;
    if (len != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
    hi = slm__hex_digit(t[3]);
    lo = slm__hex_digit(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Orders special tokens by text (bytes unsigned, a prefix first), then id. */
static int slm__special_before(const slm__vocab *v, slm_token x, slm_token y) {
    uint32_t lx, ly;
    const char *tx = slm__vocab_text(v, x, &lx), *ty = slm__vocab_text(v, y, &ly);
    int c = memcmp(tx, ty, lx < ly ? lx : ly);
    if (c != 0) return c < 0;
    if (lx != ly) return lx < ly;
    return x < y;
}

static void slm__special_sift(const slm__vocab *v, slm_token *h, uint32_t i, uint32_t n) {
    slm_token t = h[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && slm__special_before(v, h[c], h[c + 1])) c++;
        if (!slm__special_before(v, t, h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = t;
}

/* Fills v->special (room for n_special) with the control and user-defined
   tokens sorted by text, and the first-byte index: slm__special_match then
   walks the sorted texts byte by byte, so its cost does not grow with the
   number of special tokens. A heap sort: no extra memory, and a vocabulary
   of only user-defined tokens (151k of them) still sorts in n log n. Of
   tokens with the same text only the lowest id is kept, and, when that one is
   a control token, the lowest user-defined id after it (what is matched
   without SLM_TOK_SPECIAL): at most two entries per text. */
static void slm__sort_special(slm__vocab *v) {
    uint32_t i, n = 0, k, b;
    for (i = 0; i < (uint32_t)v->n_tokens; i++)
        if ((v->types[i] == SLM_TOKEN_CONTROL || v->types[i] == SLM_TOKEN_USER_DEFINED) &&
            v->text_off[i + 1] > v->text_off[i])
            v->special[n++] = (slm_token)i;
    for (i = n / 2; i-- > 0;) slm__special_sift(v, v->special, i, n);
    for (i = n; i-- > 1;) {
        slm_token t = v->special[0];
        v->special[0] = v->special[i];
        v->special[i] = t;
        slm__special_sift(v, v->special, 0, i);
    }
    for (i = 0, k = 0; i < n;) {
        uint32_t j = i + 1, len, l2;
        const char *t = slm__vocab_text(v, v->special[i], &len);
        int want_user = v->types[v->special[i]] == SLM_TOKEN_CONTROL;
        v->special[k++] = v->special[i];
        for (; j < n; j++) {
            const char *t2 = slm__vocab_text(v, v->special[j], &l2);
            if (l2 != len || memcmp(t, t2, len) != 0) break;
            if (want_user && v->types[v->special[j]] == SLM_TOKEN_USER_DEFINED) {
                v->special[k++] = v->special[j];
                want_user = 0;
            }
        }
        i = j;
    }
    v->n_special = (int)k;
    for (b = 0, i = 0; b < 256; b++) {
        v->special_first[b] = i;
        while (i < k && (uint8_t)v->text[v->text_off[v->special[i]]] == b) i++;
    }
    v->special_first[256] = k;
}

static slm_result slm__build_vocab_tables(slm__loader *ld) {
    slm_model *m = ld->m;
    slm__vocab *v = &m->vocab;
    const slm_allocator *a = &m->alloc;
    uint32_t hash_size = 16, i, n = (uint32_t)v->n_tokens, plen = 0;
    int escape = (v->flags & SLM__TOKFLAG_ESCAPE_SPACES) != 0;
    while (hash_size < 2 * n) hash_size *= 2;
    v->hash = (int32_t *)slm__alloc(a, (size_t)hash_size * sizeof(int32_t));
    v->piece = (char *)slm__alloc(a, (size_t)v->text_off[n] + 1);
    v->piece_off = (uint32_t *)slm__alloc(a, ((size_t)n + 1) * sizeof(uint32_t));
    if (!v->hash || !v->piece || !v->piece_off)
        return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for the tokenizer tables");
    memset(v->hash, 0xff, (size_t)hash_size * sizeof(int32_t));
    v->hash_mask = hash_size - 1;
    for (i = 0; i < 256; i++) v->byte_token[i] = -1;
    for (i = 0; i < n; i++) {
        uint32_t len, j, h;
        const char *t = slm__vocab_text(v, (int)i, &len);
        int byte = v->types[i] == SLM_TOKEN_BYTE ? slm__byte_token_value(t, len) : -1;
        for (h = slm__hash_bytes(t, len) & v->hash_mask; v->hash[h] >= 0; h = (h + 1) & v->hash_mask) {
            uint32_t l2;
            const char *t2 = slm__vocab_text(v, v->hash[h], &l2);
            if (l2 == len && memcmp(t2, t, len) == 0) break; /* duplicate text: the lowest id keeps it */
        }
        if (v->hash[h] < 0) v->hash[h] = (int32_t)i;
        v->piece_off[i] = plen;
        if (byte >= 0) {
            if (v->byte_token[byte] < 0) v->byte_token[byte] = (slm_token)i;
            v->piece[plen++] = (char)byte;
        } else if (v->kind == SLM_TOKENIZER_BPE && (v->types[i] == SLM_TOKEN_NORMAL || v->types[i] == 0)) {
            /* undo the byte-to-Unicode spelling; a code point outside it stays as written */
            for (j = 0; j < len;) {
                uint32_t c;
                size_t k = slm__utf8_decode((const uint8_t *)t + j, len - j, &c);
                int b = k > 1 || (uint8_t)t[j] < 0x80 ? slm__cp_to_byte(c) : -1;
                if (b >= 0)
                    v->piece[plen++] = (char)b;
                else {
                    memcpy(v->piece + plen, t + j, k);
                    plen += (uint32_t)k;
                }
                j += (uint32_t)k;
            }
        } else {
            for (j = 0; j < len; j++) {
                if (escape && j + 2 < len && (uint8_t)t[j] == 0xE2 && (uint8_t)t[j + 1] == 0x96 &&
                    (uint8_t)t[j + 2] == 0x81) {
                    v->piece[plen++] = ' ';
                    j += 2;
                } else {
                    v->piece[plen++] = t[j];
                }
            }
        }
        if ((int)(plen - v->piece_off[i]) > v->max_piece_len) v->max_piece_len = (int)(plen - v->piece_off[i]);
        if ((v->types[i] == SLM_TOKEN_CONTROL || v->types[i] == SLM_TOKEN_USER_DEFINED) && len > 0) v->n_special++;
    }
    v->piece_off[n] = plen;
    { /* end of generation: eos, eot, and the control tokens that close a chat turn */
        static const char *const turn_ends[] = { "<|im_end|>",    "<|eot_id|>",    "<|end|>",
                                                 "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>" };
        size_t k;
        if (v->eos >= 0) v->eog[v->n_eog++] = v->eos;
        if (v->eot >= 0 && v->eot != v->eos) v->eog[v->n_eog++] = v->eot;
        for (k = 0; k < sizeof turn_ends / sizeof turn_ends[0] && v->n_eog < SLM__MAX_EOG; k++) {
            slm_token t = slm__vocab_find(v, turn_ends[k], strlen(turn_ends[k]));
            int j, dup = 0;
            if (t < 0 || v->types[t] != SLM_TOKEN_CONTROL) continue;
            for (j = 0; j < v->n_eog; j++) dup |= v->eog[j] == t;
            if (!dup) v->eog[v->n_eog++] = t;
        }
    }
    if (v->n_merges > 0) {
        uint32_t size = 16, r;
        while (size < 2u * (uint32_t)v->n_merges) size *= 2;
        v->merge_hash = (int32_t *)slm__alloc(a, (size_t)size * sizeof(int32_t));
        if (!v->merge_hash) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for the merge table");
        memset(v->merge_hash, 0xff, (size_t)size * sizeof(int32_t));
        v->merge_mask = size - 1;
        for (r = 0; r < (uint32_t)v->n_merges; r++) {
            slm_token l = (slm_token)v->merges[2 * r], rt = (slm_token)v->merges[2 * r + 1];
            uint32_t h = slm__pair_hash(l, rt) & v->merge_mask;
            while (v->merge_hash[h] >= 0) {
                int32_t e = v->merge_hash[h];
                if ((slm_token)v->merges[2 * e] == l && (slm_token)v->merges[2 * e + 1] == rt) break;
                h = (h + 1) & v->merge_mask;
            }
            if (v->merge_hash[h] < 0) v->merge_hash[h] = (int32_t)r;
        }
    }
    if (v->n_special) {
        v->special = (slm_token *)slm__alloc(a, (size_t)v->n_special * sizeof(slm_token));
        if (!v->special) return slm__load_fail(ld, SLM_ERR_OOM, "out of memory for the tokenizer tables");
        slm__sort_special(v);
    }
    return SLM_OK;
}

typedef struct {
    int prev, next;
    uint32_t start, len;
} slm__sym;
typedef struct {
    float score;
    int left;
    uint32_t len;
} slm__bigram;

/* max-heap on score, then on the leftmost position */
static int slm__bigram_before(const slm__bigram *a, const slm__bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}
static void slm__heap_push(slm__bigram *h, int *n, slm__bigram b) {
    int i = (*n)++;
    while (i > 0 && slm__bigram_before(&b, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = b;
}
static slm__bigram slm__heap_pop(slm__bigram *h, int *n) {
    slm__bigram top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && slm__bigram_before(&h[c + 1], &h[c])) c++;
        if (!slm__bigram_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

/* Length of the UTF-8 character starting at s[0] (1 for an invalid byte). */
static int slm__utf8_len(const char *s, size_t avail) {
    uint8_t c = (uint8_t)s[0];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    int i;
    if ((size_t)n > avail) return 1;
    for (i = 1; i < n; i++)
        if (((uint8_t)s[i] & 0xC0) != 0x80) return 1;
    return n;
}

typedef struct slm__tok_out {
    slm_token *out;
    int cap, n;
} slm__tok_out;
static void slm__tok_emit(slm__tok_out *o, slm_token t) {
    if (o->n < o->cap) o->out[o->n] = t;
    o->n++;
}

static int32_t slm__bpe_rank(const slm__vocab *v, slm_token l, slm_token r);

/* Queues the pair (l, r) when it may merge: SentencePiece ranks pairs by the
   score of the joined token, byte-level BPE by the merge list's rank. */
static void slm__try_pair(const slm__vocab *v, const char *buf, const slm__sym *sym, int l, int r, slm__bigram *heap,
                          int *n_heap) {
    slm__bigram b;
    if (l < 0 || r < 0) return;
    if (v->kind == SLM_TOKENIZER_BPE) {
        int32_t rank = slm__bpe_rank(v, slm__vocab_find(v, buf + sym[l].start, sym[l].len),
                                     slm__vocab_find(v, buf + sym[r].start, sym[r].len));
        if (rank < 0) return;
        b.score = -(float)rank;
    } else {
        slm_token id = slm__vocab_find(v, buf + sym[l].start, sym[l].len + sym[r].len);
        if (id < 0) return;
        b.score = v->scores[id];
    }
    b.left = l;
    b.len = sym[l].len + sym[r].len;
    slm__heap_push(heap, n_heap, b);
}

/* Splits buf into UTF-8 characters and merges adjacent pairs, best first and
   leftmost on ties, until none merges. The result is the list sym[0], next... */
static void slm__merge_symbols(const slm__vocab *v, const char *buf, size_t len, slm__sym *sym, slm__bigram *heap) {
    int n_sym = 0, n_heap = 0, s;
    size_t i;
    for (i = 0; i < len; n_sym++) {
        int cl = slm__utf8_len(buf + i, len - i);
        sym[n_sym].start = (uint32_t)i;
        sym[n_sym].len = (uint32_t)cl;
        sym[n_sym].prev = n_sym - 1;
        sym[n_sym].next = n_sym + 1;
        i += (size_t)cl;
    }
    sym[n_sym - 1].next = -1;
    for (s = 0; s + 1 < n_sym; s++) slm__try_pair(v, buf, sym, s, s + 1, heap, &n_heap);
    while (n_heap > 0) {
        slm__bigram b = slm__heap_pop(heap, &n_heap);
        int l = b.left, r = sym[l].next;
        if (sym[l].len == 0 || r < 0 || sym[l].len + sym[r].len != b.len) continue; /* stale */
        sym[l].len += sym[r].len;
        sym[r].len = 0;
        sym[l].next = sym[r].next;
        if (sym[l].next >= 0) sym[sym[l].next].prev = l;
        slm__try_pair(v, buf, sym, sym[l].prev, l, heap, &n_heap);
        slm__try_pair(v, buf, sym, l, sym[l].next, heap, &n_heap);
    }
}

/* One run of plain text (no special tokens inside). Returns 1, 0 on OOM, or
   -1 when a character has no token, no byte tokens and the vocabulary no
   unknown token: *bad is then its offset in text, or (size_t)-1 for the
   dummy space. */
static int slm__spm_encode(const slm_model *m, const char *text, size_t len, int space_prefix, slm__tok_out *o,
                           size_t *bad) {
    const slm__vocab *v = &m->vocab;
    const slm_allocator *a = &m->alloc;
    int escape = (v->flags & SLM__TOKFLAG_ESCAPE_SPACES) != 0;
    size_t cap, blen = 0, i;
    char *buf;
    slm__sym *sym;
    slm__bigram *heap;
    int s, ok = 1;
    if (len == 0) return 1;
    if (len > ((size_t)-1 - 8) / 3 / sizeof(slm__bigram)) return 0;
    cap = (len + 1) * 3;
    buf = (char *)slm__alloc(a, cap);
    sym = (slm__sym *)slm__alloc(a, (len + 1) * sizeof(slm__sym));
    heap = (slm__bigram *)slm__alloc(a, (len + 1) * 3 * sizeof(slm__bigram));
    if (!buf || !sym || !heap) {
        slm__free(a, buf);
        slm__free(a, sym);
        slm__free(a, heap);
        return 0;
    }
    if (space_prefix) {
        if (escape) {
            buf[blen++] = (char)0xE2;
            buf[blen++] = (char)0x96;
            buf[blen++] = (char)0x81;
        } else
            buf[blen++] = ' ';
    }
    for (i = 0; i < len; i++) {
        if (escape && text[i] == ' ') {
            buf[blen++] = (char)0xE2;
            buf[blen++] = (char)0x96;
            buf[blen++] = (char)0x81;
        } else
            buf[blen++] = text[i];
    }
    slm__merge_symbols(v, buf, blen, sym, heap);
    for (s = 0; s >= 0; s = sym[s].next) {
        slm_token id = slm__vocab_find(v, buf + sym[s].start, sym[s].len);
        if (id >= 0) {
            slm__tok_emit(o, id);
            continue;
        }
        /* a symbol that is no token is one character (merges only make tokens):
           its bytes, else one unknown token as SentencePiece, else an error */
        for (i = 0; i < sym[s].len && v->byte_token[(uint8_t)buf[sym[s].start + i]] >= 0; i++) {}
        if (i == sym[s].len) {
            for (i = 0; i < sym[s].len; i++) slm__tok_emit(o, v->byte_token[(uint8_t)buf[sym[s].start + i]]);
        } else if (v->unk >= 0) {
            slm__tok_emit(o, v->unk);
        } else {
            size_t at = sym[s].start, p = space_prefix ? (escape ? 3 : 1) : 0;
            for (i = 0; p < at; i++) p += escape && text[i] == ' ' ? 3 : 1;
            *bad = at < (space_prefix ? (escape ? 3u : 1u) : 0u) ? (size_t)-1 : i;
            ok = -1;
            break;
        }
    }
    slm__free(a, buf);
    slm__free(a, sym);
    slm__free(a, heap);
    return ok;
}

/* Byte-level BPE (GPT-2 family). The text is first split into words by the
   vocabulary's pre-tokenizer rule (hand-written matchers for the regexes
   llama.cpp and Hugging Face use, driven by the Unicode class table below);
   each word's bytes are spelled in GPT-2's byte-to-Unicode alphabet and
   merged pair by pair in merge-rank order. Invalid UTF-8 becomes U+FFFD, as
   in llama.cpp. */

/* BEGIN GENERATED UNICODE TABLE */
/* clang-format off */
/* Generated by tools/gen-unicode-tables.py from Unicode 14.0.0: do not edit. */
/* Code point classes: each entry is (first code point << 2 | class), the class holding up to the
   next entry; class 0 other, 1 letter \p{L}, 2 number \p{N}, 3 white space \s. */
#define SLM__UCLASS_COUNT 1534
static const uint32_t slm__uclass_table[SLM__UCLASS_COUNT] = {
    0x0,     0x27,    0x38,    0x83,    0x84,    0xc2,    0xe8,    0x105,   0x16c,   0x185,   0x1ec,   0x217,   0x218,
    0x283,   0x284,   0x2a9,   0x2ac,   0x2ca,   0x2d0,   0x2d5,   0x2d8,   0x2e6,   0x2e9,   0x2ec,   0x2f2,   0x2fc,
    0x301,   0x35c,   0x361,   0x3dc,   0x3e1,   0xb08,   0xb19,   0xb48,   0xb81,   0xb94,   0xbb1,   0xbb4,   0xbb9,
    0xbbc,   0xdc1,   0xdd4,   0xdd9,   0xde0,   0xde9,   0xdf8,   0xdfd,   0xe00,   0xe19,   0xe1c,   0xe21,   0xe2c,
    0xe31,   0xe34,   0xe39,   0xe88,   0xe8d,   0xfd8,   0xfdd,   0x1208,  0x1229,  0x14c0,  0x14c5,  0x155c,  0x1565,
    0x1568,  0x1581,  0x1624,  0x1741,  0x17ac,  0x17bd,  0x17cc,  0x1881,  0x192c,  0x1982,  0x19a8,  0x19b9,  0x19c0,
    0x19c5,  0x1b50,  0x1b55,  0x1b58,  0x1b95,  0x1b9c,  0x1bb9,  0x1bc2,  0x1be9,  0x1bf4,  0x1bfd,  0x1c00,  0x1c41,
    0x1c44,  0x1c49,  0x1cc0,  0x1d35,  0x1e98,  0x1ec5,  0x1ec8,  0x1f02,  0x1f29,  0x1fac,  0x1fd1,  0x1fd8,  0x1fe9,
    0x1fec,  0x2001,  0x2058,  0x2069,  0x206c,  0x2091,  0x2094,  0x20a1,  0x20a4,  0x2101,  0x2164,  0x2181,  0x21ac,
    0x21c1,  0x2220,  0x2225,  0x223c,  0x2281,  0x2328,  0x2411,  0x24e8,  0x24f5,  0x24f8,  0x2541,  0x2544,  0x2561,
    0x2588,  0x259a,  0x25c0,  0x25c5,  0x2604,  0x2615,  0x2634,  0x263d,  0x2644,  0x264d,  0x26a4,  0x26a9,  0x26c4,
    0x26c9,  0x26cc,  0x26d9,  0x26e8,  0x26f5,  0x26f8,  0x2739,  0x273c,  0x2771,  0x2778,  0x277d,  0x2788,  0x279a,
    0x27c1,  0x27c8,  0x27d2,  0x27e8,  0x27f1,  0x27f4,  0x2815,  0x282c,  0x283d,  0x2844,  0x284d,  0x28a4,  0x28a9,
    0x28c4,  0x28c9,  0x28d0,  0x28d5,  0x28dc,  0x28e1,  0x28e8,  0x2965,  0x2974,  0x2979,  0x297c,  0x299a,  0x29c0,
    0x29c9,  0x29d4,  0x2a15,  0x2a38,  0x2a3d,  0x2a48,  0x2a4d,  0x2aa4,  0x2aa9,  0x2ac4,  0x2ac9,  0x2ad0,  0x2ad5,
    0x2ae8,  0x2af5,  0x2af8,  0x2b41,  0x2b44,  0x2b81,  0x2b88,  0x2b9a,  0x2bc0,  0x2be5,  0x2be8,  0x2c15,  0x2c34,
    0x2c3d,  0x2c44,  0x2c4d,  0x2ca4,  0x2ca9,  0x2cc4,  0x2cc9,  0x2cd0,  0x2cd5,  0x2ce8,  0x2cf5,  0x2cf8,  0x2d71,
    0x2d78,  0x2d7d,  0x2d88,  0x2d9a,  0x2dc0,  0x2dc5,  0x2dca,  0x2de0,  0x2e0d,  0x2e10,  0x2e15,  0x2e2c,  0x2e39,
    0x2e44,  0x2e49,  0x2e58,  0x2e65,  0x2e6c,  0x2e71,  0x2e74,  0x2e79,  0x2e80,  0x2e8d,  0x2e94,  0x2ea1,  0x2eac,
    0x2eb9,  0x2ee8,  0x2f41,  0x2f44,  0x2f9a,  0x2fcc,  0x3015,  0x3034,  0x3039,  0x3044,  0x3049,  0x30a4,  0x30a9,
    0x30e8,  0x30f5,  0x30f8,  0x3161,  0x316c,  0x3175,  0x3178,  0x3181,  0x3188,  0x319a,  0x31c0,  0x31e2,  0x31fc,
    0x3201,  0x3204,  0x3215,  0x3234,  0x3239,  0x3244,  0x3249,  0x32a4,  0x32a9,  0x32d0,  0x32d5,  0x32e8,  0x32f5,
    0x32f8,  0x3375,  0x337c,  0x3381,  0x3388,  0x339a,  0x33c0,  0x33c5,  0x33cc,  0x3411,  0x3434,  0x3439,  0x3444,
    0x3449,  0x34ec,  0x34f5,  0x34f8,  0x3539,  0x353c,  0x3551,  0x355c,  0x3562,  0x357d,  0x3588,  0x359a,  0x35e4,
    0x35e9,  0x3600,  0x3615,  0x365c,  0x3669,  0x36c8,  0x36cd,  0x36f0,  0x36f5,  0x36f8,  0x3701,  0x371c,  0x379a,
    0x37c0,  0x3805,  0x38c4,  0x38c9,  0x38d0,  0x3901,  0x391c,  0x3942,  0x3968,  0x3a05,  0x3a0c,  0x3a11,  0x3a14,
    0x3a19,  0x3a2c,  0x3a31,  0x3a90,  0x3a95,  0x3a98,  0x3a9d,  0x3ac4,  0x3ac9,  0x3ad0,  0x3af5,  0x3af8,  0x3b01,
    0x3b14,  0x3b19,  0x3b1c,  0x3b42,  0x3b68,  0x3b71,  0x3b80,  0x3c01,  0x3c04,  0x3c82,  0x3cd0,  0x3d01,  0x3d20,
    0x3d25,  0x3db4,  0x3e21,  0x3e34,  0x4001,  0x40ac,  0x40fd,  0x4102,  0x4128,  0x4141,  0x4158,  0x4169,  0x4178,
    0x4185,  0x4188,  0x4195,  0x419c,  0x41b9,  0x41c4,  0x41d5,  0x4208,  0x4239,  0x423c,  0x4242,  0x4268,  0x4281,
    0x4318,  0x431d,  0x4320,  0x4335,  0x4338,  0x4341,  0x43ec,  0x43f1,  0x4924,  0x4929,  0x4938,  0x4941,  0x495c,
    0x4961,  0x4964,  0x4969,  0x4978,  0x4981,  0x4a24,  0x4a29,  0x4a38,  0x4a41,  0x4ac4,  0x4ac9,  0x4ad8,  0x4ae1,
    0x4afc,  0x4b01,  0x4b04,  0x4b09,  0x4b18,  0x4b21,  0x4b5c,  0x4b61,  0x4c44,  0x4c49,  0x4c58,  0x4c61,  0x4d6c,
    0x4da6,  0x4df4,  0x4e01,  0x4e40,  0x4e81,  0x4fd8,  0x4fe1,  0x4ff8,  0x5005,  0x59b4,  0x59bd,  0x5a03,  0x5a05,
    0x5a6c,  0x5a81,  0x5bac,  0x5bba,  0x5bc5,  0x5be4,  0x5c01,  0x5c48,  0x5c7d,  0x5cc8,  0x5d01,  0x5d48,  0x5d81,
    0x5db4,  0x5db9,  0x5dc4,  0x5e01,  0x5ed0,  0x5f5d,  0x5f60,  0x5f71,  0x5f74,  0x5f82,  0x5fa8,  0x5fc2,  0x5fe8,
    0x6042,  0x6068,  0x6081,  0x61e4,  0x6201,  0x6214,  0x621d,  0x62a4,  0x62a9,  0x62ac,  0x62c1,  0x63d8,  0x6401,
    0x647c,  0x651a,  0x6541,  0x65b8,  0x65c1,  0x65d4,  0x6601,  0x66b0,  0x66c1,  0x6728,  0x6742,  0x676c,  0x6801,
    0x685c,  0x6881,  0x6954,  0x6a02,  0x6a28,  0x6a42,  0x6a68,  0x6a9d,  0x6aa0,  0x6c15,  0x6cd0,  0x6d15,  0x6d34,
    0x6d42,  0x6d68,  0x6e0d,  0x6e84,  0x6eb9,  0x6ec2,  0x6ee9,  0x6f98,  0x7001,  0x7090,  0x7102,  0x7128,  0x7135,
    0x7142,  0x7169,  0x71f8,  0x7201,  0x7224,  0x7241,  0x72ec,  0x72f5,  0x7300,  0x73a5,  0x73b4,  0x73b9,  0x73d0,
    0x73d5,  0x73dc,  0x73e9,  0x73ec,  0x7401,  0x7700,  0x7801,  0x7c58,  0x7c61,  0x7c78,  0x7c81,  0x7d18,  0x7d21,
    0x7d38,  0x7d41,  0x7d60,  0x7d65,  0x7d68,  0x7d6d,  0x7d70,  0x7d75,  0x7d78,  0x7d7d,  0x7df8,  0x7e01,  0x7ed4,
    0x7ed9,  0x7ef4,  0x7ef9,  0x7efc,  0x7f09,  0x7f14,  0x7f19,  0x7f34,  0x7f41,  0x7f50,  0x7f59,  0x7f70,  0x7f81,
    0x7fb4,  0x7fc9,  0x7fd4,  0x7fd9,  0x7ff4,  0x8003,  0x802c,  0x80a3,  0x80a8,  0x80bf,  0x80c0,  0x817f,  0x8180,
    0x81c2,  0x81c5,  0x81c8,  0x81d2,  0x81e8,  0x81fd,  0x8202,  0x8228,  0x8241,  0x8274,  0x8409,  0x840c,  0x841d,
    0x8420,  0x8429,  0x8450,  0x8455,  0x8458,  0x8465,  0x8478,  0x8491,  0x8494,  0x8499,  0x849c,  0x84a1,  0x84a4,
    0x84a9,  0x84b8,  0x84bd,  0x84e8,  0x84f1,  0x8500,  0x8515,  0x8528,  0x8539,  0x853c,  0x8542,  0x860d,  0x8616,
    0x8628,  0x9182,  0x9270,  0x93aa,  0x9400,  0x9dda,  0x9e50,  0xb001,  0xb394,  0xb3ad,  0xb3bc,  0xb3c9,  0xb3d0,
    0xb3f6,  0xb3f8,  0xb401,  0xb498,  0xb49d,  0xb4a0,  0xb4b5,  0xb4b8,  0xb4c1,  0xb5a0,  0xb5bd,  0xb5c0,  0xb601,
    0xb65c,  0xb681,  0xb69c,  0xb6a1,  0xb6bc,  0xb6c1,  0xb6dc,  0xb6e1,  0xb6fc,  0xb701,  0xb71c,  0xb721,  0xb73c,
    0xb741,  0xb75c,  0xb761,  0xb77c,  0xb8bd,  0xb8c0,  0xc003,  0xc004,  0xc015,  0xc01e,  0xc020,  0xc086,  0xc0a8,
    0xc0c5,  0xc0d8,  0xc0e2,  0xc0ed,  0xc0f4,  0xc105,  0xc25c,  0xc275,  0xc280,  0xc285,  0xc3ec,  0xc3f1,  0xc400,
    0xc415,  0xc4c0,  0xc4c5,  0xc63c,  0xc64a,  0xc658,  0xc681,  0xc700,  0xc7c1,  0xc800,  0xc882,  0xc8a8,  0xc922,
    0xc940,  0xc946,  0xc980,  0xca02,  0xca28,  0xcac6,  0xcb00,  0xd001,  0x13700, 0x13801, 0x29234, 0x29341, 0x293f8,
    0x29401, 0x29834, 0x29841, 0x29882, 0x298a9, 0x298b0, 0x29901, 0x299bc, 0x299fd, 0x29a78, 0x29a81, 0x29b9a, 0x29bc0,
    0x29c5d, 0x29c80, 0x29c89, 0x29e24, 0x29e2d, 0x29f2c, 0x29f41, 0x29f48, 0x29f4d, 0x29f50, 0x29f55, 0x29f68, 0x29fc9,
    0x2a008, 0x2a00d, 0x2a018, 0x2a01d, 0x2a02c, 0x2a031, 0x2a08c, 0x2a0c2, 0x2a0d8, 0x2a101, 0x2a1d0, 0x2a209, 0x2a2d0,
    0x2a342, 0x2a368, 0x2a3c9, 0x2a3e0, 0x2a3ed, 0x2a3f0, 0x2a3f5, 0x2a3fc, 0x2a402, 0x2a429, 0x2a498, 0x2a4c1, 0x2a51c,
    0x2a581, 0x2a5f4, 0x2a611, 0x2a6cc, 0x2a73d, 0x2a742, 0x2a768, 0x2a781, 0x2a794, 0x2a799, 0x2a7c2, 0x2a7e9, 0x2a7fc,
    0x2a801, 0x2a8a4, 0x2a901, 0x2a90c, 0x2a911, 0x2a930, 0x2a942, 0x2a968, 0x2a981, 0x2a9dc, 0x2a9e9, 0x2a9ec, 0x2a9f9,
    0x2aac0, 0x2aac5, 0x2aac8, 0x2aad5, 0x2aadc, 0x2aae5, 0x2aaf8, 0x2ab01, 0x2ab04, 0x2ab09, 0x2ab0c, 0x2ab6d, 0x2ab78,
    0x2ab81, 0x2abac, 0x2abc9, 0x2abd4, 0x2ac05, 0x2ac1c, 0x2ac25, 0x2ac3c, 0x2ac45, 0x2ac5c, 0x2ac81, 0x2ac9c, 0x2aca1,
    0x2acbc, 0x2acc1, 0x2ad6c, 0x2ad71, 0x2ada8, 0x2adc1, 0x2af8c, 0x2afc2, 0x2afe8, 0x2b001, 0x35e90, 0x35ec1, 0x35f1c,
    0x35f2d, 0x35ff0, 0x3e401, 0x3e9b8, 0x3e9c1, 0x3eb68, 0x3ec01, 0x3ec1c, 0x3ec4d, 0x3ec60, 0x3ec75, 0x3ec78, 0x3ec7d,
    0x3eca4, 0x3eca9, 0x3ecdc, 0x3ece1, 0x3ecf4, 0x3ecf9, 0x3ecfc, 0x3ed01, 0x3ed08, 0x3ed0d, 0x3ed14, 0x3ed19, 0x3eec8,
    0x3ef4d, 0x3f4f8, 0x3f541, 0x3f640, 0x3f649, 0x3f720, 0x3f7c1, 0x3f7f0, 0x3f9c1, 0x3f9d4, 0x3f9d9, 0x3fbf4, 0x3fc42,
    0x3fc68, 0x3fc85, 0x3fcec, 0x3fd05, 0x3fd6c, 0x3fd99, 0x3fefc, 0x3ff09, 0x3ff20, 0x3ff29, 0x3ff40, 0x3ff49, 0x3ff60,
    0x3ff69, 0x3ff74, 0x40001, 0x40030, 0x40035, 0x4009c, 0x400a1, 0x400ec, 0x400f1, 0x400f8, 0x400fd, 0x40138, 0x40141,
    0x40178, 0x40201, 0x403ec, 0x4041e, 0x404d0, 0x40502, 0x405e4, 0x4062a, 0x40630, 0x40a01, 0x40a74, 0x40a81, 0x40b44,
    0x40b86, 0x40bf0, 0x40c01, 0x40c82, 0x40c90, 0x40cb5, 0x40d06, 0x40d09, 0x40d2a, 0x40d2c, 0x40d41, 0x40dd8, 0x40e01,
    0x40e78, 0x40e81, 0x40f10, 0x40f21, 0x40f40, 0x40f46, 0x40f58, 0x41001, 0x41278, 0x41282, 0x412a8, 0x412c1, 0x41350,
    0x41361, 0x413f0, 0x41401, 0x414a0, 0x414c1, 0x41590, 0x415c1, 0x415ec, 0x415f1, 0x4162c, 0x41631, 0x4164c, 0x41651,
    0x41658, 0x4165d, 0x41688, 0x4168d, 0x416c8, 0x416cd, 0x416e8, 0x416ed, 0x416f4, 0x41801, 0x41cdc, 0x41d01, 0x41d58,
    0x41d81, 0x41da0, 0x41e01, 0x41e18, 0x41e1d, 0x41ec4, 0x41ec9, 0x41eec, 0x42001, 0x42018, 0x42021, 0x42024, 0x42029,
    0x420d8, 0x420dd, 0x420e4, 0x420f1, 0x420f4, 0x420fd, 0x42158, 0x42162, 0x42181, 0x421dc, 0x421e6, 0x42201, 0x4227c,
    0x4229e, 0x422c0, 0x42381, 0x423cc, 0x423d1, 0x423d8, 0x423ee, 0x42401, 0x4245a, 0x42470, 0x42481, 0x424e8, 0x42601,
    0x426e0, 0x426f2, 0x426f9, 0x42702, 0x42740, 0x4274a, 0x42801, 0x42804, 0x42841, 0x42850, 0x42855, 0x42860, 0x42865,
    0x428d8, 0x42902, 0x42924, 0x42981, 0x429f6, 0x429fc, 0x42a01, 0x42a76, 0x42a80, 0x42b01, 0x42b20, 0x42b25, 0x42b94,
    0x42bae, 0x42bc0, 0x42c01, 0x42cd8, 0x42d01, 0x42d58, 0x42d62, 0x42d81, 0x42dcc, 0x42de2, 0x42e01, 0x42e48, 0x42ea6,
    0x42ec0, 0x43001, 0x43124, 0x43201, 0x432cc, 0x43301, 0x433cc, 0x433ea, 0x43401, 0x43490, 0x434c2, 0x434e8, 0x43982,
    0x439fc, 0x43a01, 0x43aa8, 0x43ac1, 0x43ac8, 0x43c01, 0x43c76, 0x43c9d, 0x43ca0, 0x43cc1, 0x43d18, 0x43d46, 0x43d54,
    0x43dc1, 0x43e08, 0x43ec1, 0x43f16, 0x43f30, 0x43f81, 0x43fdc, 0x4400d, 0x440e0, 0x4414a, 0x441c0, 0x441c5, 0x441cc,
    0x441d5, 0x441d8, 0x4420d, 0x442c0, 0x44341, 0x443a4, 0x443c2, 0x443e8, 0x4440d, 0x4449c, 0x444da, 0x44500, 0x44511,
    0x44514, 0x4451d, 0x44520, 0x44541, 0x445cc, 0x445d9, 0x445dc, 0x4460d, 0x446cc, 0x44705, 0x44714, 0x44742, 0x44769,
    0x4476c, 0x44771, 0x44774, 0x44786, 0x447d4, 0x44801, 0x44848, 0x4484d, 0x448b0, 0x44a01, 0x44a1c, 0x44a21, 0x44a24,
    0x44a29, 0x44a38, 0x44a3d, 0x44a78, 0x44a7d, 0x44aa4, 0x44ac1, 0x44b7c, 0x44bc2, 0x44be8, 0x44c15, 0x44c34, 0x44c3d,
    0x44c44, 0x44c4d, 0x44ca4, 0x44ca9, 0x44cc4, 0x44cc9, 0x44cd0, 0x44cd5, 0x44ce8, 0x44cf5, 0x44cf8, 0x44d41, 0x44d44,
    0x44d75, 0x44d88, 0x45001, 0x450d4, 0x4511d, 0x4512c, 0x45142, 0x45168, 0x4517d, 0x45188, 0x45201, 0x452c0, 0x45311,
    0x45318, 0x4531d, 0x45320, 0x45342, 0x45368, 0x45601, 0x456bc, 0x45761, 0x45770, 0x45801, 0x458c0, 0x45911, 0x45914,
    0x45942, 0x45968, 0x45a01, 0x45aac, 0x45ae1, 0x45ae4, 0x45b02, 0x45b28, 0x45c01, 0x45c6c, 0x45cc2, 0x45cf0, 0x45d01,
    0x45d1c, 0x46001, 0x460b0, 0x46281, 0x46382, 0x463cc, 0x463fd, 0x4641c, 0x46425, 0x46428, 0x46431, 0x46450, 0x46455,
    0x4645c, 0x46461, 0x464c0, 0x464fd, 0x46500, 0x46505, 0x46508, 0x46542, 0x46568, 0x46681, 0x466a0, 0x466a9, 0x46744,
    0x46785, 0x46788, 0x4678d, 0x46790, 0x46801, 0x46804, 0x4682d, 0x468cc, 0x468e9, 0x468ec, 0x46941, 0x46944, 0x46971,
    0x46a28, 0x46a75, 0x46a78, 0x46ac1, 0x46be4, 0x47001, 0x47024, 0x47029, 0x470bc, 0x47101, 0x47104, 0x47142, 0x471b4,
    0x471c9, 0x47240, 0x47401, 0x4741c, 0x47421, 0x47428, 0x4742d, 0x474c4, 0x47519, 0x4751c, 0x47542, 0x47568, 0x47581,
    0x47598, 0x4759d, 0x475a4, 0x475a9, 0x47628, 0x47661, 0x47664, 0x47682, 0x476a8, 0x47b81, 0x47bcc, 0x47ec1, 0x47ec4,
    0x47f02, 0x47f54, 0x48001, 0x48e68, 0x49002, 0x491bc, 0x49201, 0x49510, 0x4be41, 0x4bfc4, 0x4c001, 0x4d0bc, 0x51001,
    0x5191c, 0x5a001, 0x5a8e4, 0x5a901, 0x5a97c, 0x5a982, 0x5a9a8, 0x5a9c1, 0x5aafc, 0x5ab02, 0x5ab28, 0x5ab41, 0x5abb8,
    0x5ac01, 0x5acc0, 0x5ad01, 0x5ad10, 0x5ad42, 0x5ad68, 0x5ad6e, 0x5ad88, 0x5ad8d, 0x5ade0, 0x5adf5, 0x5ae40, 0x5b901,
    0x5ba02, 0x5ba5c, 0x5bc01, 0x5bd2c, 0x5bd41, 0x5bd44, 0x5be4d, 0x5be80, 0x5bf81, 0x5bf88, 0x5bf8d, 0x5bf90, 0x5c001,
    0x61fe0, 0x62001, 0x63358, 0x63401, 0x63424, 0x6bfc1, 0x6bfd0, 0x6bfd5, 0x6bff0, 0x6bff5, 0x6bffc, 0x6c001, 0x6c48c,
    0x6c541, 0x6c54c, 0x6c591, 0x6c5a0, 0x6c5c1, 0x6cbf0, 0x6f001, 0x6f1ac, 0x6f1c1, 0x6f1f4, 0x6f201, 0x6f224, 0x6f241,
    0x6f268, 0x74b82, 0x74bd0, 0x74d82, 0x74de4, 0x75001, 0x75154, 0x75159, 0x75274, 0x75279, 0x75280, 0x75289, 0x7528c,
    0x75295, 0x7529c, 0x752a5, 0x752b4, 0x752b9, 0x752e8, 0x752ed, 0x752f0, 0x752f5, 0x75310, 0x75315, 0x75418, 0x7541d,
    0x7542c, 0x75435, 0x75454, 0x75459, 0x75474, 0x75479, 0x754e8, 0x754ed, 0x754fc, 0x75501, 0x75514, 0x75519, 0x7551c,
    0x75529, 0x75544, 0x75549, 0x75a98, 0x75aa1, 0x75b04, 0x75b09, 0x75b6c, 0x75b71, 0x75bec, 0x75bf1, 0x75c54, 0x75c59,
    0x75cd4, 0x75cd9, 0x75d3c, 0x75d41, 0x75dbc, 0x75dc1, 0x75e24, 0x75e29, 0x75ea4, 0x75ea9, 0x75f0c, 0x75f11, 0x75f30,
    0x75f3a, 0x76000, 0x77c01, 0x77c7c, 0x78401, 0x784b4, 0x784dd, 0x784f8, 0x78502, 0x78528, 0x78539, 0x7853c, 0x78a41,
    0x78ab8, 0x78b01, 0x78bb0, 0x78bc2, 0x78be8, 0x79f81, 0x79f9c, 0x79fa1, 0x79fb0, 0x79fb5, 0x79fbc, 0x79fc1, 0x79ffc,
    0x7a001, 0x7a314, 0x7a31e, 0x7a340, 0x7a401, 0x7a510, 0x7a52d, 0x7a530, 0x7a542, 0x7a568, 0x7b1c6, 0x7b2b0, 0x7b2b6,
    0x7b2c0, 0x7b2c6, 0x7b2d4, 0x7b406, 0x7b4b8, 0x7b4be, 0x7b4f8, 0x7b801, 0x7b810, 0x7b815, 0x7b880, 0x7b885, 0x7b88c,
    0x7b891, 0x7b894, 0x7b89d, 0x7b8a0, 0x7b8a5, 0x7b8cc, 0x7b8d1, 0x7b8e0, 0x7b8e5, 0x7b8e8, 0x7b8ed, 0x7b8f0, 0x7b909,
    0x7b90c, 0x7b91d, 0x7b920, 0x7b925, 0x7b928, 0x7b92d, 0x7b930, 0x7b935, 0x7b940, 0x7b945, 0x7b94c, 0x7b951, 0x7b954,
    0x7b95d, 0x7b960, 0x7b965, 0x7b968, 0x7b96d, 0x7b970, 0x7b975, 0x7b978, 0x7b97d, 0x7b980, 0x7b985, 0x7b98c, 0x7b991,
    0x7b994, 0x7b99d, 0x7b9ac, 0x7b9b1, 0x7b9cc, 0x7b9d1, 0x7b9e0, 0x7b9e5, 0x7b9f4, 0x7b9f9, 0x7b9fc, 0x7ba01, 0x7ba28,
    0x7ba2d, 0x7ba70, 0x7ba85, 0x7ba90, 0x7ba95, 0x7baa8, 0x7baad, 0x7baf0, 0x7c402, 0x7c434, 0x7efc2, 0x7efe8, 0x80001,
    0xa9b80, 0xa9c01, 0xadce4, 0xadd01, 0xae078, 0xae081, 0xb3a88, 0xb3ac1, 0xbaf84, 0xbe001, 0xbe878, 0xc0001, 0xc4d2c,
};
// clang-format on
/* END GENERATED UNICODE TABLE */

enum { SLM__CL_OTHER = 0, SLM__CL_LETTER = 1, SLM__CL_NUMBER = 2, SLM__CL_SPACE = 3, SLM__CL_END = 4 };

static int slm__uclass(uint32_t cp) {
    int lo = 0, hi = SLM__UCLASS_COUNT - 1;
    if (cp >= 0x110000) return SLM__CL_OTHER;
    while (lo < hi) { /* last entry whose start <= cp */
        int mid = (lo + hi + 1) / 2;
        if ((slm__uclass_table[mid] >> 2) <= cp)
            lo = mid;
        else
            hi = mid - 1;
    }
    return (int)(slm__uclass_table[lo] & 3u);
}

/* llama.cpp's Llama-3 family: the pre-tokenizer names for which it sets
   ignore_merges and adds BOS by default. dbrx and smaug-bpe share the Llama-3
   split (slm_pretok_from_name) but not these two settings. */
SLM__SHARED int slm__pretok_llama3_family(const char *name) {
    static const char *const names[] = { "llama3",  "llama-v3", "llama-bpe", "falcon3",     "falcon-h1",
                                         "pixtral", "midm-2.0", "lfm2",      "jina-v5-nano" };
    size_t i;
    for (i = 0; name && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i]) == 0) return 1;
    return 0;
}

SLM_API int slm_pretok_from_name(const char *name) {
    static const char *const gpt2[] = { "gpt-2",      "phi-2",        "jina-es",     "jina-de",         "gigachat",
                                        "jina-v2-es", "jina-v2-de",   "a.x-4.0",     "mellum",          "modern-bert",
                                        "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4",         "mpt",
                                        "olmo",       "jais",         "trillion",    "granite-docling", NULL };
    static const char *const llama3[] = { "dbrx", "smaug-bpe", NULL }; /* and slm__pretok_llama3_family */
    static const char *const qwen2[] = { "qwen2",  "deepseek-r1-qwen", "kormo",   "f2llmv2",
                                         "megrez", "stablelm2",        "hunyuan", NULL };
    static const char *const starcoder[] = { "starcoder", "refact", "command-r",  "smollm",
                                             "codeshell", "exaone", "minerva-7b", NULL };
    static const char *const *const lists[4] = { gpt2, llama3, qwen2, starcoder };
    int l, i;
    if (!name) return -1;
    if (slm__pretok_llama3_family(name)) return SLM_PRETOK_LLAMA3;
    for (l = 0; l < 4; l++)
        for (i = 0; lists[l][i]; i++)
            if (strcmp(lists[l][i], name) == 0) return l + 1;
    return -1;
}

SLM_API int slm_chat_template_detect(const char *t) {
    if (!t || !*t) return SLM_CHAT_NONE;
    if (strstr(t, "<|im_start|>")) return SLM_CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return SLM_CHAT_LLAMA3;
    if (strstr(t, "<start_of_turn>")) return SLM_CHAT_GEMMA;
    if (strstr(t, "<|user|>") && strstr(t, "<|end|>")) return SLM_CHAT_PHI3;
    if (strstr(t, "<|user|>")) return SLM_CHAT_ZEPHYR;
    if (strstr(t, "[INST]")) return SLM_CHAT_LLAMA2;
    return SLM_CHAT_NONE;
}

typedef struct slm__words {
    const uint32_t *cp;
    const uint8_t *cl;
    size_t *ends; /* word end positions, in code points */
    size_t n;
} slm__words;

static int slm__cl_at(const slm__words *w, size_t pos, size_t end) {
    return pos < end ? (int)w->cl[pos] : (int)SLM__CL_END;
}
static uint32_t slm__cp_at(const slm__words *w, size_t pos, size_t end) { return pos < end ? w->cp[pos] : 0xFFFFFFFFu; }
static void slm__word_end(slm__words *w, size_t *prev, size_t end) {
    if (end > *prev) w->ends[w->n++] = end;
    *prev = end;
}
static uint32_t slm__ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }
#define SLM__IS_OTHER(c) ((c) == SLM__CL_OTHER)

/* 's|'t|'re|'ve|'m|'ll|'d (case-insensitive when asked); returns its length or 0 */
static size_t slm__contraction(const slm__words *w, size_t pos, size_t end, int any_case) {
    uint32_t a, b;
    if (w->cp[pos] != '\'' || pos + 1 >= end) return 0;
    a = w->cp[pos + 1];
    if (any_case) a = slm__ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    b = w->cp[pos + 2];
    if (any_case) b = slm__ascii_lower(b);
    return ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) ? 3 : 0;
}

/* \s+(?!\S)|\s+ at pos, which holds white space */
static size_t slm__space_run(const slm__words *w, size_t pos, size_t end) {
    size_t n = 0;
    while (slm__cl_at(w, pos + n, end) == SLM__CL_SPACE) n++;
    return (n > 1 && pos + n < end) ? n - 1 : n;
}

static void slm__split_gpt2(slm__words *w, size_t begin, size_t end) {
    size_t pos = begin, prev = begin;
    while (pos < end) {
        uint32_t c = w->cp[pos];
        int cl = w->cl[pos], cl2 = c == ' ' ? slm__cl_at(w, pos + 1, end) : cl;
        size_t k = slm__contraction(w, pos, end, 0);
        if (k) {
            pos += k;
            slm__word_end(w, &prev, pos);
            continue;
        }
        if (cl2 == SLM__CL_LETTER || cl2 == SLM__CL_NUMBER || SLM__IS_OTHER(cl2)) {
            pos += (c == ' ');
            while (slm__cl_at(w, pos, end) == cl2) pos++;
            slm__word_end(w, &prev, pos);
            continue;
        }
        if (cl == SLM__CL_SPACE) {
            pos += slm__space_run(w, pos, end);
            slm__word_end(w, &prev, pos);
            continue;
        }
        slm__word_end(w, &prev, ++pos);
    }
}

/* Llama-3 (max_digits 3) and Qwen2 (max_digits 1) */
static void slm__split_llama3(slm__words *w, size_t begin, size_t end, int max_digits) {
    size_t pos = begin, prev = begin;
    while (pos < end) {
        uint32_t c = w->cp[pos];
        int cl = w->cl[pos], cl2;
        size_t k = slm__contraction(w, pos, end, 1);
        if (k) {
            pos += k;
            slm__word_end(w, &prev, pos);
            continue;
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (!(c == '\r' || c == '\n' || cl == SLM__CL_NUMBER) &&
            (cl == SLM__CL_LETTER || slm__cl_at(w, pos + 1, end) == SLM__CL_LETTER)) {
            pos++;
            while (slm__cl_at(w, pos, end) == SLM__CL_LETTER) pos++;
            slm__word_end(w, &prev, pos);
            continue;
        }
        /* \p{N}{1,max_digits} */
        if (cl == SLM__CL_NUMBER) {
            int n = 0;
            while (n < max_digits && slm__cl_at(w, pos, end) == SLM__CL_NUMBER) {
                pos++;
                n++;
            }
            slm__word_end(w, &prev, pos);
            continue;
        }
        /* ' '?[^\s\p{L}\p{N}]+[\r\n]* */
        cl2 = c == ' ' ? slm__cl_at(w, pos + 1, end) : cl;
        if (SLM__IS_OTHER(cl2)) {
            pos += (c == ' ');
            while (SLM__IS_OTHER(slm__cl_at(w, pos, end))) pos++;
            while (slm__cp_at(w, pos, end) == '\r' || slm__cp_at(w, pos, end) == '\n') pos++;
            slm__word_end(w, &prev, pos);
            continue;
        }
        if (cl == SLM__CL_SPACE) {
            /* \s*[\r\n]+ : white space up to and including its last line break */
            size_t n = 0, last_nl = 0;
            while (slm__cl_at(w, pos + n, end) == SLM__CL_SPACE) {
                if (w->cp[pos + n] == '\r' || w->cp[pos + n] == '\n') last_nl = pos + n + 1;
                n++;
            }
            pos = last_nl ? last_nl : pos + slm__space_run(w, pos, end);
            slm__word_end(w, &prev, pos);
            continue;
        }
        slm__word_end(w, &prev, ++pos);
    }
}

static void slm__pretokenize(slm__words *w, size_t n_cp, int pre) {
    size_t i, start = 0;
    switch (pre) {
    case SLM_PRETOK_LLAMA3: slm__split_llama3(w, 0, n_cp, 3); break;
    case SLM_PRETOK_QWEN2: slm__split_llama3(w, 0, n_cp, 1); break;
    case SLM_PRETOK_STARCODER:
        /* each digit stands alone; the GPT-2 rule runs on the text between them */
        for (i = 0; i <= n_cp; i++) {
            if (i < n_cp && w->cl[i] != SLM__CL_NUMBER) continue;
            slm__split_gpt2(w, start, i);
            if (i < n_cp) w->ends[w->n++] = i + 1;
            start = i + 1;
        }
        break;
    case SLM_PRETOK_GPT2: slm__split_gpt2(w, 0, n_cp); break;
    default:
        if (n_cp) w->ends[w->n++] = n_cp;
        break;
    }
}

static int32_t slm__bpe_rank(const slm__vocab *v, slm_token l, slm_token r) {
    uint32_t i;
    if (l < 0 || r < 0 || !v->merge_hash) return -1;
    for (i = slm__pair_hash(l, r);; i++) {
        int32_t rank = v->merge_hash[i & v->merge_mask];
        if (rank < 0) return -1;
        if ((slm_token)v->merges[2 * rank] == l && (slm_token)v->merges[2 * rank + 1] == r) return rank;
    }
}

/* Merges one word already spelled in the byte-to-Unicode alphabet. Returns
   1, or 0 when a symbol cannot be encoded (*bad: its offset in buf). */
static int slm__bpe_word(const slm__vocab *v, const char *buf, size_t len, slm__sym *sym, slm__bigram *heap,
                         slm__tok_out *o, size_t *bad) {
    int s;
    size_t i;
    slm_token whole;
    if ((v->flags & SLM__TOKFLAG_IGNORE_MERGES) && (whole = slm__vocab_find(v, buf, len)) >= 0) {
        slm__tok_emit(o, whole);
        return 1;
    }
    slm__merge_symbols(v, buf, len, sym, heap);
    for (s = 0; s >= 0; s = sym[s].next) {
        slm_token id = slm__vocab_find(v, buf + sym[s].start, sym[s].len);
        if (id >= 0) {
            slm__tok_emit(o, id);
            continue;
        }
        /* as llama.cpp: single bytes that happen to be tokens; when some are
           not, the unknown token rather than losing them, else an error */
        for (i = 0; i < sym[s].len && slm__vocab_find(v, buf + sym[s].start + i, 1) >= 0; i++) {}
        if (i == sym[s].len) {
            for (i = 0; i < sym[s].len; i++) slm__tok_emit(o, slm__vocab_find(v, buf + sym[s].start + i, 1));
        } else if (v->unk >= 0) {
            slm__tok_emit(o, v->unk);
        } else {
            *bad = sym[s].start;
            return 0;
        }
    }
    return 1;
}

/* One run of plain text with no special tokens inside. Returns 1, 0 on OOM,
   or -1 when a character cannot be encoded (*bad: its offset in text). */
static int slm__bpe_encode(const slm_model *m, const char *text, size_t len, slm__tok_out *o, size_t *bad) {
    const slm__vocab *v = &m->vocab;
    const slm_allocator *a = &m->alloc;
    uint32_t *cp;
    uint8_t *cl;
    size_t *ends, n_cp = 0, i, w, word_start = 0, max_word = 0;
    char *buf;
    slm__sym *sym;
    slm__bigram *heap;
    slm__words words;
    int ok = 0;
    if (len == 0) return 1;
    cp = (uint32_t *)slm__alloc(a, len * sizeof(uint32_t));
    cl = (uint8_t *)slm__alloc(a, len);
    ends = (size_t *)slm__alloc(a, (len + 1) * sizeof(size_t));
    if (!cp || !cl || !ends) goto done;
    for (i = 0; i < len; n_cp++) {
        i += slm__utf8_decode((const uint8_t *)text + i, len - i, &cp[n_cp]);
        cl[n_cp] = (uint8_t)slm__uclass(cp[n_cp]);
    }
    words.cp = cp;
    words.cl = cl;
    words.ends = ends;
    words.n = 0;
    slm__pretokenize(&words, n_cp, v->pre);
    for (w = 0; w < words.n; w++) {
        if (ends[w] - word_start > max_word) max_word = ends[w] - word_start;
        word_start = ends[w];
    }
    /* a code point is at most 4 UTF-8 bytes, each spelled as at most 2 bytes */
    buf = (char *)slm__alloc(a, max_word * 8 + 1);
    sym = (slm__sym *)slm__alloc(a, (max_word * 4 + 1) * sizeof(slm__sym));
    heap = (slm__bigram *)slm__alloc(a, (max_word * 4 + 1) * 3 * sizeof(slm__bigram));
    if (buf && sym && heap) {
        word_start = 0;
        ok = 1;
        for (w = 0; w < words.n && ok == 1; w++) {
            size_t blen = 0, c, at;
            for (c = word_start; c < ends[w]; c++) {
                char u[4];
                size_t k, n = slm__utf8_encode(cp[c], u);
                for (k = 0; k < n; k++) blen += slm__utf8_encode(slm__byte_to_cp((uint8_t)u[k]), buf + blen);
            }
            if (!slm__bpe_word(v, buf, blen, sym, heap, o, &at)) {
                /* the code point whose spelling holds buf[at], then its offset in text */
                size_t spelled = 0, c2, off = 0;
                for (c = word_start; c + 1 < ends[w]; c++) {
                    char u[4], tmp[4];
                    size_t k, n = slm__utf8_encode(cp[c], u), sl = 0;
                    for (k = 0; k < n; k++) sl += slm__utf8_encode(slm__byte_to_cp((uint8_t)u[k]), tmp);
                    if (spelled + sl > at) break;
                    spelled += sl;
                }
                for (c2 = 0; c2 < c; c2++) {
                    uint32_t skipped;
                    off += slm__utf8_decode((const uint8_t *)text + off, len - off, &skipped);
                }
                *bad = off;
                ok = -1;
            }
            word_start = ends[w];
        }
    }
    slm__free(a, buf);
    slm__free(a, sym);
    slm__free(a, heap);
done:
    slm__free(a, cp);
    slm__free(a, cl);
    slm__free(a, ends);
    return ok;
}

/* The longest special token that s[0..avail) starts with, -1 if none; control
   tokens only when `control`. Among tokens of one text the lowest id wins.
   Walks the sorted list (slm__sort_special) one byte deeper at a time,
   narrowing by binary search to the tokens that start with s[0..d): the cost
   is the match's length times log2 of the tokens, whatever their number.
   *steps counts the entries looked at. */
static slm_token slm__special_match(const slm__vocab *v, const char *s, size_t avail, int control, uint32_t *len,
                                    uint64_t *steps) {
    uint32_t lo = v->special_first[(uint8_t)s[0]], hi = v->special_first[(uint8_t)s[0] + 1], d = 1;
    slm_token best = -1;
    *len = 0;
    while (lo < hi) {
        /* [lo, hi) start with s[0..d); those exactly d long come first */
        int found = 0;
        while (lo < hi && v->text_off[v->special[lo] + 1] - v->text_off[v->special[lo]] == d) {
            slm_token t = v->special[lo++];
            (*steps)++;
            if (!found && (control || v->types[t] != SLM_TOKEN_CONTROL)) {
                best = t;
                *len = d;
                found = 1;
            }
        }
        if (d >= avail || lo >= hi) break;
        { /* keep the tokens whose byte d is s[d] */
            uint8_t c = (uint8_t)s[d];
            uint32_t a = lo, b = hi;
            while (a < b) {
                uint32_t mid = a + (b - a) / 2;
                (*steps)++;
                if ((uint8_t)v->text[v->text_off[v->special[mid]] + d] < c)
                    a = mid + 1;
                else
                    b = mid;
            }
            lo = a;
            b = hi;
            while (a < b) {
                uint32_t mid = a + (b - a) / 2;
                (*steps)++;
                if ((uint8_t)v->text[v->text_off[v->special[mid]] + d] <= c)
                    a = mid + 1;
                else
                    b = mid;
            }
            hi = a;
        }
        d++;
    }
    return best;
}

/* What slm__tokenize reports besides the count. */
typedef struct slm__tok_status {
    slm_result rc;          /* SLM_OK, SLM_ERR_INVALID_ARG or SLM_ERR_OOM */
    char msg[SLM__MSG_MAX]; /* why, when rc is not SLM_OK */
    uint64_t steps;         /* special-token candidates examined: the white-box tests bound the cost with it */
} slm__tok_status;

static int slm__tok_fail(slm__tok_status *st, slm_result rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    slm__vformat(st->msg, sizeof st->msg, fmt, ap);
    va_end(ap);
    st->rc = rc;
    return 0;
}

/* Names the character at text[frag + bad] (bad (size_t)-1: SentencePiece's
   dummy space before text[frag]) that the vocabulary cannot encode. */
static int slm__tok_cannot_encode(slm__tok_status *st, const char *text, size_t len, size_t frag, size_t bad) {
    static const char why[] = "the vocabulary has no byte tokens for it and no unknown token";
    char what[40], hex[8];
    size_t at = frag + bad, k, n = 0, w = 0;
    uint32_t cp, x;
    int invalid;
    if (bad == (size_t)-1)
        return slm__tok_fail(st, SLM_ERR_INVALID_ARG, "cannot encode the space SentencePiece adds at byte %zu: %s",
                             frag, why);
    k = slm__utf8_decode((const uint8_t *)text + at, len - at, &cp);
    invalid = cp == 0xFFFD && k == 1; /* not UTF-8: name the byte */
    x = invalid ? (uint8_t)text[at] : cp;
    do {
        hex[n++] = "0123456789ABCDEF"[x & 15];
        x >>= 4;
    } while (x || n < (invalid ? 2u : 4u));
    if (invalid) {
        memcpy(what, "byte 0x", 7);
        w = 7;
    } else if (cp >= 0x20 && cp != 0x7F && (cp < 0x80 || cp >= 0xA0)) { /* printable: 'c' (U+XXXX) */
        what[w++] = '\'';
        memcpy(what + w, text + at, k);
        w += k;
        memcpy(what + w, "' (U+", 5);
        w += 5;
    } else {
        memcpy(what, "U+", 2);
        w = 2;
    }
    while (n > 0) what[w++] = hex[--n];
    if (what[0] == '\'') what[w++] = ')';
    what[w] = 0;
    return slm__tok_fail(st, SLM_ERR_INVALID_ARG, "cannot encode %s at byte %zu: %s", what, at, why);
}

/* slm_tokenize, with the reason of a failure in st (slm_generate puts it in
   the session's message). */
static int slm__tokenize(const slm_model *m, const char *text, size_t len, int flags, slm_token *out, int cap,
                         slm__tok_status *st) {
    const slm__vocab *v;
    slm__tok_out o;
    size_t frag = 0, i = 0;
    int prev_special = 1, add_special = (flags & SLM_TOK_BOS) != 0;
    st->rc = SLM_OK;
    st->msg[0] = 0;
    st->steps = 0;
    if ((!text && len) || cap < 0 || (!out && cap > 0) || (flags & ~(SLM_TOK_BOS | SLM_TOK_SPECIAL)))
        return slm__tok_fail(st, SLM_ERR_INVALID_ARG,
                             "invalid arguments (text %s, len %zu, out %s, cap %d, flags 0x%x)", text ? "set" : "NULL",
                             len, out ? "set" : "NULL", cap, (unsigned)flags);
    if (len > (size_t)INT_MAX / 4)
        return slm__tok_fail(st, SLM_ERR_INVALID_ARG, "%zu bytes of text is more than the %d it takes", len,
                             INT_MAX / 4);
    v = &m->vocab;
    o.out = out;
    o.cap = cap;
    o.n = 0;
    if (add_special && (v->flags & SLM__TOKFLAG_ADD_BOS) && v->bos >= 0) slm__tok_emit(&o, v->bos);
    while (i <= len) {
        slm_token special = -1;
        uint32_t slen = 0;
        if (i < len)
            special = slm__special_match(v, text + i, len - i, (flags & SLM_TOK_SPECIAL) != 0, &slen, &st->steps);
        if (special < 0 && i < len) {
            i++;
            continue;
        }
        if (i > frag) {
            /* SentencePiece adds its dummy space at the start and after each special token */
            size_t bad = 0;
            int ok = v->kind == SLM_TOKENIZER_BPE
                         ? slm__bpe_encode(m, text + frag, i - frag, &o, &bad)
                         : slm__spm_encode(m, text + frag, i - frag,
                                           prev_special && (v->flags & SLM__TOKFLAG_SPACE_PREFIX), &o, &bad);
            if (ok == 0) return slm__tok_fail(st, SLM_ERR_OOM, "out of memory for %zu bytes of text", i - frag);
            if (ok < 0) return slm__tok_cannot_encode(st, text, len, frag, bad);
            prev_special = 0;
        }
        if (i == len) break;
        slm__tok_emit(&o, special);
        prev_special = 1;
        i += slen;
        frag = i;
    }
    if (add_special && (v->flags & SLM__TOKFLAG_ADD_EOS) && v->eos >= 0) slm__tok_emit(&o, v->eos);
    return o.n <= cap ? o.n : -o.n;
}

SLM_API int slm_tokenize(const slm_model *m, const char *text, size_t len, int flags, slm_token *out, int cap) {
    slm__tok_status st;
    int n;
    if (!m) return 0;
    n = slm__tokenize(m, text, len, flags, out, cap, &st);
    /* 0 is also the count of an empty text: the log is where an error shows */
    if (st.rc != SLM_OK) slm__log(m->log, m->log_user, SLM_LOG_ERROR, "slm_tokenize: %s", st.msg);
    return n;
}

SLM_API const char *slm_token_piece(const slm_model *m, slm_token t, int *len) {
    if (len) *len = 0;
    if (!m || t < 0 || t >= m->vocab.n_tokens) return NULL;
    if (len) *len = (int)(m->vocab.piece_off[t + 1] - m->vocab.piece_off[t]);
    return m->vocab.piece + m->vocab.piece_off[t];
}

SLM_API int slm_token_type(const slm_model *m, slm_token t) {
    if (!m || t < 0 || t >= m->vocab.n_tokens) return -1;
    return m->vocab.types[t] ? (int)m->vocab.types[t] : (int)SLM_TOKEN_NORMAL;
}

/* ---- kernels -------------------------------------------------------------
   The kernel boundary: one dot product per weight type between a weight row
   and one token's activations, and for the interleaved _R16 types one group
   of 16 rows against up to four tokens. f32/f16/bf16 weights meet float
   activations; q8_0/q4_0 weights meet activations quantized to q8_0, with
   integer dot products per 32-block as GGML does. Attention has its own
   small kernels (scores, weighted value sums). Each `_ref` function is the
   plain C reference; the SIMD versions follow it per instruction set and are
   tested against it. A row's result never depends on which other rows or
   tokens share the call, so a token gives bit-identical results whether it is
   evaluated alone or in a batch, on any thread count.

   Which version runs is the kernel table in "config and platform". Adding an
   instruction set: derive its SLM__<ISA> macro in the block above the table,
   write its kernels here under #if defined(SLM__<ISA>), each next to the
   reference it implements, and give it a block in the table (an operation
   it has no kernel for names another set's, or _ref). The kernel tests check
   whatever the table picks. */

SLM__MAYBE_UNUSED static float slm__dot_f32_ref(const float *w, const float *x, int n) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < n; j++) sum += w[j] * x[j];
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_f16_ref(const uint16_t *w, const float *x, int n) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < n; j++) sum += slm_fp16_to_fp32(w[j]) * x[j];
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_bf16_ref(const uint16_t *w, const float *x, int n) {
    float sum = 0.0f;
    int j;
    for (j = 0; j < n; j++) sum += slm_bf16_to_fp32(w[j]) * x[j];
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_q8_0_ref(const slm__block_q8_0 *w, const slm__block_q8_0 *x, int n_blocks) {
    float sum = 0.0f;
    int b, j;
    for (b = 0; b < n_blocks; b++) {
        int sumi = 0;
        for (j = 0; j < SLM__QK; j++) sumi += w[b].q[j] * x[b].q[j];
        sum += (float)sumi * (slm_fp16_to_fp32(w[b].d) * slm_fp16_to_fp32(x[b].d));
    }
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_q4_0_ref(const slm__block_q4_0 *w, const slm__block_q8_0 *x, int n_blocks) {
    float sum = 0.0f;
    int b, j;
    for (b = 0; b < n_blocks; b++) {
        int sumi = 0;
        for (j = 0; j < SLM__QK / 2; j++)
            sumi += ((w[b].q[j] & 0x0f) - 8) * x[b].q[j] + ((w[b].q[j] >> 4) - 8) * x[b].q[j + SLM__QK / 2];
        sum += (float)sumi * (slm_fp16_to_fp32(w[b].d) * slm_fp16_to_fp32(x[b].d));
    }
    return sum;
}

/* q5_0/q5_1 rows against q8_0 activations (n_blocks blocks of 32), xsum[b]
   the sum of block b's activation quants, which q5_1's min multiplies:
   integer sums per block, then one float step per block, as for q4_0. */
SLM__MAYBE_UNUSED static float slm__dot_q5_0_ref(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                 int n_blocks) {
    const slm__block_q5_0 *wb = (const slm__block_q5_0 *)w;
    float sum = 0.0f;
    int b, j;
    (void)xsum;
    for (b = 0; b < n_blocks; b++) {
        int sumi = 0;
        for (j = 0; j < SLM__QK; j++) sumi += (slm__q5_at(wb[b].qs, wb[b].qh, j) - 16) * x[b].q[j];
        sum += (float)sumi * (slm_fp16_to_fp32(wb[b].d) * slm_fp16_to_fp32(x[b].d));
    }
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_q5_1_ref(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                 int n_blocks) {
    const slm__block_q5_1 *wb = (const slm__block_q5_1 *)w;
    float sum = 0.0f;
    int b, j;
    for (b = 0; b < n_blocks; b++) {
        int sumi = 0;
        float dx = slm_fp16_to_fp32(x[b].d);
        for (j = 0; j < SLM__QK; j++) sumi += slm__q5_at(wb[b].qs, wb[b].qh, j) * x[b].q[j];
        sum += (float)sumi * (slm_fp16_to_fp32(wb[b].d) * dx) + (float)xsum[b] * (slm_fp16_to_fp32(wb[b].m) * dx);
    }
    return sum;
}

/* q4_K (five 0) and q5_K against q8_K activations: per super-block the
   integer sum of sc_j * (quants . activations) and of m_j * (activation
   sums), then d and dmin times the activations' scale. */
SLM__MAYBE_UNUSED static float slm__dot_q45k_ref(const uint8_t *w, const slm__block_q8_K *x, int n_super, int five) {
    float sum = 0.0f;
    int i, j, l;
    for (i = 0; i < n_super; i++) {
        const uint8_t *scales, *qs, *qh = NULL;
        float d, dmin;
        int sumi = 0, summ = 0;
        if (five) {
            const slm__block_q5_K *blk = (const slm__block_q5_K *)w + i;
            d = slm_fp16_to_fp32(blk->d);
            dmin = slm_fp16_to_fp32(blk->dmin);
            scales = blk->scales;
            qs = blk->qs;
            qh = blk->qh;
        } else {
            const slm__block_q4_K *blk = (const slm__block_q4_K *)w + i;
            d = slm_fp16_to_fp32(blk->d);
            dmin = slm_fp16_to_fp32(blk->dmin);
            scales = blk->scales;
            qs = blk->qs;
        }
        for (j = 0; j < 8; j++) {
            int sc, mn, isum = 0;
            slm__kq_scale_min(j, scales, &sc, &mn);
            for (l = 0; l < 32; l++) isum += slm__q45k_at(qs, qh, 32 * j + l) * x[i].qs[32 * j + l];
            sumi += sc * isum;
            summ += mn * (x[i].bsums[2 * j] + x[i].bsums[2 * j + 1]);
        }
        sum += (d * x[i].d) * (float)sumi - (dmin * x[i].d) * (float)summ;
    }
    return sum;
}
SLM__MAYBE_UNUSED static float slm__dot_q4_K_ref(const uint8_t *w, const slm__block_q8_K *x, int n_super) {
    return slm__dot_q45k_ref(w, x, n_super, 0);
}
SLM__MAYBE_UNUSED static float slm__dot_q5_K_ref(const uint8_t *w, const slm__block_q8_K *x, int n_super) {
    return slm__dot_q45k_ref(w, x, n_super, 1);
}

/* q6_K against q8_K: per sub-block of 16, scale x (quants . activations) */
SLM__MAYBE_UNUSED static float slm__dot_q6_K_ref(const uint8_t *w, const slm__block_q8_K *x, int n_super) {
    float sum = 0.0f;
    int i, j, l;
    for (i = 0; i < n_super; i++) {
        const slm__block_q6_K *blk = (const slm__block_q6_K *)w + i;
        int sumi = 0;
        for (j = 0; j < 16; j++) {
            int isum = 0;
            for (l = 0; l < 16; l++) isum += slm__q6k_at(blk, 16 * j + l) * x[i].qs[16 * j + l];
            sumi += blk->scales[j] * isum;
        }
        sum += (slm_fp16_to_fp32(blk->d) * x[i].d) * (float)sumi;
    }
    return sum;
}

/* One row against nt tokens' activations (token t at x + t * xs),
   out[t]: the form the kernel table gives the SIMD versions, which decode
   the row once for every token. */
SLM__MAYBE_UNUSED static void slm__dotm_q5_0_ref(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                 size_t xs, int nt, int n_blocks, float *out) {
    int t;
    for (t = 0; t < nt; t++) out[t] = slm__dot_q5_0_ref(w, x + (size_t)t * xs, xsum + (size_t)t * xs, n_blocks);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_1_ref(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                 size_t xs, int nt, int n_blocks, float *out) {
    int t;
    for (t = 0; t < nt; t++) out[t] = slm__dot_q5_1_ref(w, x + (size_t)t * xs, xsum + (size_t)t * xs, n_blocks);
}
SLM__MAYBE_UNUSED static void slm__dotm_q4_K_ref(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                 int n_super, float *out) {
    int t;
    for (t = 0; t < nt; t++) out[t] = slm__dot_q4_K_ref(w, x + (size_t)t * xs, n_super);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_K_ref(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                 int n_super, float *out) {
    int t;
    for (t = 0; t < nt; t++) out[t] = slm__dot_q5_K_ref(w, x + (size_t)t * xs, n_super);
}
SLM__MAYBE_UNUSED static void slm__dotm_q6_K_ref(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                 int n_super, float *out) {
    int t;
    for (t = 0; t < nt; t++) out[t] = slm__dot_q6_K_ref(w, x + (size_t)t * xs, n_super);
}

/* nr (1..4) rows against one activation vector: the SIMD versions share the
   activations' loads between the rows */
SLM__INLINE void slm__dotn_q8_0_ref(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                    float *out) {
    int r;
    for (r = 0; r < nr; r++) out[r] = slm__dot_q8_0_ref(w[r], x, n_blocks);
}
SLM__INLINE void slm__dotn_q4_0_ref(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                    float *out) {
    int r;
    for (r = 0; r < nr; r++) out[r] = slm__dot_q4_0_ref(w[r], x, n_blocks);
}

/* out += a * v, the weighted sum over the value cache in attention */
SLM__MAYBE_UNUSED static void slm__axpy_f32_ref(float *out, float a, const float *v, int n) {
    int i;
    for (i = 0; i < n; i++) out[i] += a * v[i];
}
SLM__MAYBE_UNUSED static void slm__axpy_f16_ref(float *out, float a, const uint16_t *v, int n) {
    int i;
    for (i = 0; i < n; i++) out[i] += a * slm_fp16_to_fp32(v[i]);
}

/* Activations to q8_0 blocks for the integer kernels, with each block's sum
   of quants (for the _R16 kernels' offsets). */
SLM__MAYBE_UNUSED static void slm__quantize_act_blocks_ref(const float *x, slm__block_q8_0 *q, int32_t *sum, int n) {
    int b, j;
    slm__quantize_q8_0(x, q, n);
    for (b = 0; b < n / SLM__QK; b++) {
        int v = 0;
        for (j = 0; j < SLM__QK; j++) v += q[b].q[j];
        sum[b] = v;
    }
}

/* The interleaved kernels: rows 0..15 of one _R16 group (nb blocks per row)
   against nt tokens' activations, token t at x + t * x_stride with its
   per-block sums of quants at xsum + t * x_stride; y[t * y_stride + r]. Each
   row sums its blocks in order, as the row kernels above do, and the integer
   part is exact, so only float rounding separates SIMD from reference. */
SLM__MAYBE_UNUSED static void slm__gemm_r16_ref(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                                const int32_t *xsum, size_t x_stride, int nt, float *y,
                                                size_t y_stride) {
    int t, r, b, j;
    (void)xsum;
    for (t = 0; t < nt; t++) {
        const slm__block_q8_0 *xt = x + (size_t)t * x_stride;
        for (r = 0; r < SLM__R16; r++) {
            float sum = 0.0f;
            for (b = 0; b < nb; b++) {
                const uint8_t *q = slm__r16_quants(type, group, nb, b);
                uint16_t dw;
                int sumi = 0;
                memcpy(&dw, slm__r16_scales(group, b) + 2 * r, 2);
                if (type == SLM_TYPE_Q8_0_R16) {
                    for (j = 0; j < SLM__QK; j++)
                        sumi += (int8_t)q[(j / 4) * 4 * SLM__R16 + 4 * r + j % 4] * xt[b].q[j];
                } else if (type == SLM_TYPE_Q5_0_R16) { /* line 0: qh, then the nibbles as q4_0 */
                    uint32_t qh = (uint32_t)q[4 * r] | (uint32_t)q[4 * r + 1] << 8 | (uint32_t)q[4 * r + 2] << 16 |
                                  (uint32_t)q[4 * r + 3] << 24;
                    for (j = 0; j < SLM__QK; j++) {
                        int byte = q[(1 + (j % 16) / 4) * 4 * SLM__R16 + 4 * r + j % 4];
                        int v = (j < 16 ? byte & 0x0f : byte >> 4) | (int)((qh >> j) & 1u) << 4;
                        sumi += (v - 16) * xt[b].q[j];
                    }
                } else {
                    for (j = 0; j < SLM__QK / 2; j++) {
                        int byte = q[(j / 4) * 4 * SLM__R16 + 4 * r + j % 4];
                        sumi += ((byte & 0x0f) - 8) * xt[b].q[j] + ((byte >> 4) - 8) * xt[b].q[j + SLM__QK / 2];
                    }
                }
                sum += (float)sumi * (slm_fp16_to_fp32(dw) * slm_fp16_to_fp32(xt[b].d));
            }
            y[(size_t)t * y_stride + r] = sum;
        }
    }
}

/* Bytes ahead in each weight row that the kernels prefetch: the hardware
   prefetcher alone leaves decode at a third of the memory bandwidth. 2048
   measured best on Zen 4 with kernels that prefetched one line per block;
   on Zen 5, with the K-quant row groups prefetching every line, 8192 made
   one thread's decode of pure q4_K / q6_K files 1.36x / 1.62x faster than
   2048 (16384 slower), the K-quant mixes 1.0-1.05x, prefill unchanged. The
   x86 kernels of the interleaved (_R16) layouts look 4096 bytes ahead for
   q8_0 (then non-temporal: 1.05-1.3x faster than 2048; 8192 was slower on
   Qwen2.5) and 8192 for q4_0 (another 1.08-1.18x). Medians of 4-6
   alternating runs, SmolLM2, Qwen2.5 and dim-1024 shapes. Internal,
   overridden with -D to tune another CPU (bench/); no test sets them, and
   any value gives the same results. */
#ifndef SLM__PREFETCH
#define SLM__PREFETCH 8192
#endif
#ifndef SLM__PREFETCH_R16
#define SLM__PREFETCH_R16 4096
#endif
/* The hint of decode's prefetches (a lone token reads each weight line once).
   _MM_HINT_T0, as prefill's: non-temporal prefetches (_MM_HINT_NTA, the
   default from 0.6.0 to 0.7.0) left one thread's decode at 5.6 GB/s on an
   Intel Xeon (model 207) that streams 12 GB/s: they fill the L1 only,
   without the L2 streamer behind them, and the big L3 never keeps the
   weights for the next token; T0 there ran decode 1.5-3x faster (SmolLM2
   and Qwen2.5 shapes, q8_0 and q4_0, one and two threads). NTA had come with
   a longer distance on Zen 5 (1.05-1.3x together); on its own it was never
   measured there: set it with -D to try. Internal, like the distances. */
#ifndef SLM__PREFETCH_HINT_LONE
#define SLM__PREFETCH_HINT_LONE _MM_HINT_T0
#endif
/* One weight line for a pass of nt tokens: a lone token's with
   SLM__PREFETCH_HINT_LONE, else into every cache level (prefill reads the
   line again for the next tile of tokens). The hint must be a constant. */
#define SLM__PREFETCH_LINE(p, nt)                                     \
    do {                                                              \
        if ((nt) == 1)                                                \
            _mm_prefetch((const char *)(p), SLM__PREFETCH_HINT_LONE); \
        else                                                          \
            _mm_prefetch((const char *)(p), _MM_HINT_T0);             \
    } while (0)
/* A block's nbytes of quants in an interleaved group, SLM__PREFETCH_R16
   bytes ahead for q8_0's 512, twice that for the 4- and 5-bit types' 256 and
   320. */
#define SLM__PREFETCH_GROUP(q, nbytes, nt)                                                      \
    do {                                                                                        \
        const char *pf_at_ = (const char *)(q) + ((nbytes) >= 512 ? 1 : 2) * SLM__PREFETCH_R16; \
        int pf_;                                                                                \
        for (pf_ = 0; pf_ < (int)(nbytes); pf_ += 64) SLM__PREFETCH_LINE(pf_at_ + pf_, nt);     \
    } while (0)

#if defined(SLM__AVX2)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__MAYBE_UNUSED static float slm__hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
#if defined(__GNUC__) && !defined(__clang__)
/* g++ 12 (C++) reports casts inside its own AVX-512 headers as uninitialised: a false positive */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
static float slm__hsum512(__m512 v) { return _mm512_reduce_add_ps(v); }

/* u8 x s8 products summed in groups of four into 16 int32 lanes */
static __m512i slm__dot_u8s8_512(__m512i u, __m512i s) {
#if defined(SLM__AVX512_VNNI)
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

static float slm__dot_f32_avx512(const float *w, const float *x, int n) {
    __m512 acc = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(x + j), acc);
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + j), _mm512_maskz_loadu_ps(m, x + j), acc);
    }
    return slm__hsum512(acc);
}

static float slm__dot_f16_avx512(const uint16_t *w, const float *x, int n) {
    __m512 acc = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16)
        acc =
            _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + j))), _mm512_loadu_ps(x + j), acc);
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        acc =
            _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, w + j)), _mm512_maskz_loadu_ps(m, x + j), acc);
    }
    return slm__hsum512(acc);
}

static float slm__dot_bf16_avx512(const uint16_t *w, const float *x, int n) {
    __m512 acc = _mm512_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + j)));
        acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), _mm512_loadu_ps(x + j), acc);
    }
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, w + j));
        acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), _mm512_maskz_loadu_ps(m, x + j), acc);
    }
    return slm__hsum512(acc);
}

/* two blocks' scale products, each broadcast over its 8 lanes */
SLM__INLINE __m512 slm__pair_scales(float a, float b) {
    /* insertf64x4, not insertf32x8: AVX-512F alone, no DQ */
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(_mm256_set1_ps(a))),
                                               _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

SLM__INLINE __m512i slm__load_2x32(const int8_t *a, const int8_t *b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)a)),
                              _mm256_loadu_si256((const __m256i *)b), 1);
}

/* nr (1..4) rows against one activation vector, sharing its loads. Each
   row's arithmetic is the same whatever nr, so grouping never changes a result. */
SLM__INLINE void slm__dotn_q8_0_avx512(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                       float *out) {
    __m512 acc[4];
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
    for (b = 0; b + 2 <= n_blocks; b += 2) {
        __m512i xv = slm__load_2x32(x[b].q, x[b + 1].q);
        /* u8 x s8 products only: x's magnitude, and its sign moved onto w */
        __m512i ax = _mm512_abs_epi8(xv);
        __mmask64 neg = _mm512_movepi8_mask(xv);
        float dx0 = slm_fp16_to_fp32(x[b].d), dx1 = slm_fp16_to_fp32(x[b + 1].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            __m512i wv;
            _mm_prefetch((const char *)(w[r] + b) + SLM__PREFETCH, _MM_HINT_T0);
            wv = slm__load_2x32(w[r][b].q, w[r][b + 1].q);
            __m512i sw = _mm512_mask_sub_epi8(wv, neg, _mm512_setzero_si512(), wv);
            __m512 sc = slm__pair_scales(slm_fp16_to_fp32(w[r][b].d) * dx0, slm_fp16_to_fp32(w[r][b + 1].d) * dx1);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(slm__dot_u8s8_512(ax, sw)), sc, acc[r]);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] =
        slm__hsum512(acc[r]) + (b < n_blocks ? slm__dot_q8_0_ref(w[r] + b, x + b, n_blocks - b) : 0.0f);
}

SLM__INLINE void slm__dotn_q4_0_avx512(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                       float *out) {
    __m512 acc[4];
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m512i eight = _mm512_set1_epi8(8);
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
    for (b = 0; b + 2 <= n_blocks; b += 2) {
        __m512i xv = slm__load_2x32(x[b].q, x[b + 1].q);
        __m512i x8 = slm__dot_u8s8_512(eight, xv); /* the -8 offset of every nibble, applied once */
        float dx0 = slm_fp16_to_fp32(x[b].d), dx1 = slm_fp16_to_fp32(x[b + 1].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            __m256i ab;
            _mm_prefetch((const char *)(w[r] + b) + SLM__PREFETCH, _MM_HINT_T0);
            ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)w[r][b].q)),
                                         _mm_loadu_si128((const __m128i *)w[r][b + 1].q), 1);
            __m256i lo = _mm256_and_si256(ab, low4), hi = _mm256_and_si256(_mm256_srli_epi16(ab, 4), low4);
            /* [b.lo b.hi | b+1.lo b+1.hi] matches the activation order of two blocks */
            __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                                            _mm256_permute2x128_si256(lo, hi, 0x31), 1);
            __m512i sumi = _mm512_sub_epi32(slm__dot_u8s8_512(wv, xv), x8);
            __m512 sc = slm__pair_scales(slm_fp16_to_fp32(w[r][b].d) * dx0, slm_fp16_to_fp32(w[r][b + 1].d) * dx1);
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), sc, acc[r]);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] =
        slm__hsum512(acc[r]) + (b < n_blocks ? slm__dot_q4_0_ref(w[r] + b, x + b, n_blocks - b) : 0.0f);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

/* the AVX2 kernel set (F16C's conversions in its f16 kernels); an AVX-512
   build compiles it too, with only some of it in the table */
#if defined(SLM__AVX2) && defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__MAYBE_UNUSED static float slm__dot_f32_avx2(const float *w, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    float sum;
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(x + j), acc);
    sum = slm__hsum256(acc);
    for (; j < n; j++) sum += w[j] * x[j];
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_f16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    float sum;
    for (; j + 8 <= n; j += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + j))), _mm256_loadu_ps(x + j), acc);
    sum = slm__hsum256(acc);
    for (; j < n; j++) sum += slm_fp16_to_fp32(w[j]) * x[j];
    return sum;
}

SLM__MAYBE_UNUSED static float slm__dot_bf16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    float sum;
    for (; j + 8 <= n; j += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + j)));
        acc = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(h, 16)), _mm256_loadu_ps(x + j), acc);
    }
    sum = slm__hsum256(acc);
    for (; j < n; j++) sum += slm_bf16_to_fp32(w[j]) * x[j];
    return sum;
}

/* signed x signed bytes summed in groups of four into 8 int32 lanes: |x|
   times w with x's sign, whose pairs fit vpmaddubsw's int16, so AVX-VNNI's
   vpdpbusd (no int16 step) gives the same sums */
SLM__INLINE __m256i slm__dot_s8s8_256(__m256i w, __m256i x) {
#if defined(SLM__AVXVNNI)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
#else
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(w, x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

/* nr (1..4) rows against one activation vector; per-row arithmetic independent of nr */
SLM__INLINE void slm__dotn_q8_0_avx2(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                     float *out) {
    __m256 acc[4];
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    for (b = 0; b < n_blocks; b++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].q);
        float dx = slm_fp16_to_fp32(x[b].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            __m256i sumi;
            _mm_prefetch((const char *)(w[r] + b) + SLM__PREFETCH, _MM_HINT_T0);
            sumi = slm__dot_s8s8_256(_mm256_loadu_si256((const __m256i *)w[r][b].q), xv);
            acc[r] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(slm_fp16_to_fp32(w[r][b].d) * dx), acc[r]);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] = slm__hsum256(acc[r]);
}

SLM__INLINE void slm__dotn_q4_0_avx2(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                     float *out) {
    __m256 acc[4];
    const __m128i low4 = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = _mm256_setzero_ps();
    for (b = 0; b < n_blocks; b++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].q);
        float dx = slm_fp16_to_fp32(x[b].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            __m128i q;
            _mm_prefetch((const char *)(w[r] + b) + SLM__PREFETCH, _MM_HINT_T0);
            q = _mm_loadu_si128((const __m128i *)w[r][b].q);
            __m128i lo = _mm_sub_epi8(_mm_and_si128(q, low4), eight),
                    hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), low4), eight);
            __m256i sumi = slm__dot_s8s8_256(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1), xv);
            acc[r] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_set1_ps(slm_fp16_to_fp32(w[r][b].d) * dx), acc[r]);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] = slm__hsum256(acc[r]);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

/* ---- q5_0/q5_1 and K-quant kernels, AVX-512 and AVX2 ----
   One weight row against nt tokens' activations (q8_0 blocks for
   q5_0/q5_1, q8_K for the K-quants; token t at x + t * xs), each next to its
   reference above in what it computes: the row is decoded once for all the
   tokens (prefill reads it from cache for every group of four). The integer
   part is exact and each token's float steps are the same whatever nt, so
   only the order of float additions separates these from the reference. */

/* The 6-bit scales and mins of a q4_K/q5_K block as 8 + 8 bytes (slm__kq_scale_min for all j at once). */
SLM__INLINE void slm__kq_unpack_scales(const uint8_t *q, uint8_t *out16) {
    uint32_t u0, u1, u2, v[4];
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    v[0] = u0 & 0x3f3f3f3fu;                                             /* sc 0..3 */
    v[1] = (u2 & 0x0f0f0f0fu) | (((u0 >> 6) & 0x03030303u) << 4);        /* sc 4..7 */
    v[2] = u1 & 0x3f3f3f3fu;                                             /* m 0..3 */
    v[3] = ((u2 >> 4) & 0x0f0f0f0fu) | (((u1 >> 6) & 0x03030303u) << 4); /* m 4..7 */
    memcpy(out16, v, 16);
}

#if defined(SLM__AVX2)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
/* [m0, m0, m1, m1, ... m7, m7] as int16 from 8 bytes: madd with the 16
   activation sums of 16 gives m_j x (sum of sub-block j) */
SLM__INLINE __m256i slm__kq_mins_pairs(const uint8_t *m8) {
    __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)m8));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(m, m)), _mm_unpackhi_epi16(m, m), 1);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
/* lanes 0..7 = v[a], lanes 8..15 = v[b] */
SLM__INLINE __m512i slm__pair_lanes(__m512i v, int a, int b) {
    return _mm512_permutexvar_epi32(_mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a), v);
}

/* acc + the u8 x s8 products of w and x summed in pairs (each pair within
   int16: quants <= 63), times the int16 scales s16 (each in both words of a
   lane), summed into 16 int32 lanes: one instruction fewer than a dot product
   then a 32-bit multiply */
SLM__INLINE __m512i slm__dot_scaled_512(__m512i acc, __m512i w, __m512i x, __m512i s16) {
#if defined(SLM__AVX512_VNNI)
    return _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(w, x), s16);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(w, x), s16));
#endif
}

/* q4_K (five 0) and q5_K against q8_K */
SLM__INLINE void slm__dotm_q45k_avx512(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super,
                                       float *out, int five) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    __m512 acc[4];
    __m256 accm[4];
    size_t bb = five ? sizeof(slm__block_q5_K) : sizeof(slm__block_q4_K);
    int i, c, t, k;
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
        accm[t] = _mm256_setzero_ps();
    }
    for (i = 0; i < n_super; i++) {
        const uint8_t *blk = w + (size_t)i * bb, *qs = blk + (five ? 48 : 16);
        uint8_t sm[16];
        uint16_t d16, dmin16;
        __m512i sc, wv[4], sl[4], qh2 = _mm512_setzero_si512();
        __m256i mn;
        float dw, dmw;
        _mm_prefetch((const char *)blk + SLM__PREFETCH, _MM_HINT_T0);
        memcpy(&d16, blk, 2);
        memcpy(&dmin16, blk + 2, 2);
        dw = slm_fp16_to_fp32(d16);
        dmw = slm_fp16_to_fp32(dmin16);
        slm__kq_unpack_scales(blk + 4, sm);
        sc = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)sm));
        mn = slm__kq_mins_pairs(sm + 8);
        if (five) qh2 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)));
        for (c = 0; c < 2; c++) {
            __m512i q = _mm512_loadu_si512((const void *)(qs + 64 * c));
            __m512i lo = _mm512_and_si512(q, low4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
            /* sub-blocks 4c, 4c+1 and 4c+2, 4c+3: elements 128c.. in order */
            wv[2 * c] = _mm512_shuffle_i64x2(lo, hi, 0x44);
            wv[2 * c + 1] = _mm512_shuffle_i64x2(lo, hi, 0xEE);
            if (five) { /* fifth bit of element l: bit l/32 of qh[l % 32] */
                __m512i ma = _mm512_inserti64x4(_mm512_set1_epi8((char)(1 << (4 * c))),
                                                _mm256_set1_epi8((char)(2 << (4 * c))), 1);
                __m512i mb = _mm512_inserti64x4(_mm512_set1_epi8((char)(4 << (4 * c))),
                                                _mm256_set1_epi8((char)(8 << (4 * c))), 1);
                wv[2 * c] = _mm512_or_si512(wv[2 * c], _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh2, ma), sixteen));
                wv[2 * c + 1] =
                    _mm512_or_si512(wv[2 * c + 1], _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(qh2, mb), sixteen));
            }
        }
        for (k = 0; k < 4; k++) {
            sl[k] = slm__pair_lanes(sc, 2 * k, 2 * k + 1);
            sl[k] = _mm512_or_si512(sl[k], _mm512_slli_epi32(sl[k], 16));
        }
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            __m512i isum = _mm512_setzero_si512();
            for (k = 0; k < 4; k++)
                isum = slm__dot_scaled_512(isum, wv[k], _mm512_loadu_si512((const void *)(xt->qs + 64 * k)), sl[k]);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dw * xt->d), acc[t]);
            /* mins: m_j times the sum of sub-block j's 32 activations (two bsums) */
            accm[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xt->bsums), mn)),
                _mm256_set1_ps(dmw * xt->d), accm[t]);
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) out[t] = slm__hsum512(acc[t]) - slm__hsum256(accm[t]);
}
SLM__MAYBE_UNUSED static void slm__dotm_q4_K_avx512(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                    int n_super, float *out) {
    slm__dotm_q45k_avx512(w, x, xs, nt, n_super, out, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_K_avx512(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                    int n_super, float *out) {
    slm__dotm_q45k_avx512(w, x, xs, nt, n_super, out, 1);
}

/* q6_K against q8_K: nr (1..4) rows (row_size bytes apart) against nt
   (1..4) tokens, out[4 * r + t]; both counts constants where this inlines so
   that the nr x nt accumulators stay in registers, and a row's super-block is
   decoded once for every token. Quants 0..63 (q + 32) times activations, times
   the sub-block's scale; the -32 enters as -32 x scale x each sub-block's
   activation sum (bsums) in the same int32 lanes, so a block's sum is exact
   until one convert and one multiply-add per (row, token): each (row, token)
   takes the same steps whatever nr and nt, so results do not depend on how
   rows and tokens are grouped (by thread count, batch size). The kernel
   table's slm__dotm_q6_K (one row) on AVX-512, slm__dotr_q6_K (row groups)
   with VNNI. */
SLM__INLINE void slm__dotr_q6_K_group(const uint8_t *w, size_t row_size, const slm__block_q8_K *x, size_t xs, int nr,
                                      int nt, int n_super, float *out) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), bits45 = _mm512_set1_epi8(0x30);
    /* qh's 32 bytes in both halves, the upper half shifted down 2: sub-blocks
       of 32 elements 0, 1 (bits 0-1, 2-3) at bits 0-1, 2, 3 (bits 4-5, 6-7) at 4-5 */
    const __m512i qh_shift = _mm512_set_epi64(0x0002000200020002LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                              0x0002000200020002LL, 0, 0, 0, 0);
    /* int16 scale s[j] into both words of the 4 int32 lanes of sub-block j */
    const __m512i sc_idx =
        _mm512_set_epi32(0x00030003, 0x00030003, 0x00030003, 0x00030003, 0x00020002, 0x00020002, 0x00020002, 0x00020002,
                         0x00010001, 0x00010001, 0x00010001, 0x00010001, 0, 0, 0, 0);
    __m512 acc[4][4];
    int i, r, t, h, k;
    SLM__UNROLL4 for (r = 0; r < nr; r++) SLM__UNROLL4 for (t = 0; t < nt; t++) acc[r][t] = _mm512_setzero_ps();
    for (i = 0; i < n_super; i++) {
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            const slm__block_q6_K *blk = (const slm__block_q6_K *)(w + (size_t)r * row_size) + i;
            __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->scales));
            __m512i s512 = _mm512_castsi256_si512(s16), wv[4], sl[4];
            /* -32 x the scales against the 16 bsums, in the low 8 lanes */
            __m512i m32 = _mm512_inserti64x4(_mm512_setzero_si512(),
                                             _mm256_slli_epi16(_mm256_sub_epi16(_mm256_setzero_si256(), s16), 5), 0);
            __m512 dw = _mm512_set1_ps(slm_fp16_to_fp32(blk->d));
            /* the block's 3.3 cache lines; a lone token (decode) reads them once */
            for (k = 0; k < 256; k += 64) SLM__PREFETCH_LINE((const char *)blk + SLM__PREFETCH + k, nt);
            SLM__UNROLL4 for (h = 0; h < 2; h++) {
                __m512i l = _mm512_loadu_si512((const void *)(blk->ql + 64 * h));
                __m512i hh = _mm512_srlv_epi16(
                    _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h))), qh_shift);
                /* elements 64h .. 64h+63 from the low nibbles, the next 64 from the high */
                wv[2 * h] =
                    _mm512_or_si512(_mm512_and_si512(l, low4), _mm512_and_si512(_mm512_slli_epi16(hh, 4), bits45));
                wv[2 * h + 1] =
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4), _mm512_and_si512(hh, bits45));
            }
            SLM__UNROLL4 for (k = 0; k < 4; k++) sl[k] =
                _mm512_permutexvar_epi16(_mm512_add_epi16(sc_idx, _mm512_set1_epi16((short)(4 * k))), s512);
            SLM__UNROLL4 for (t = 0; t < nt; t++) {
                const slm__block_q8_K *xt = x + (size_t)t * xs + i;
                __m512i isum = _mm512_madd_epi16(
                    _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_loadu_si256((const __m256i *)xt->bsums), 0), m32);
                SLM__UNROLL4 for (k = 0; k < 4; k++) isum =
                    slm__dot_scaled_512(isum, wv[k], _mm512_loadu_si512((const void *)(xt->qs + 64 * k)), sl[k]);
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(xt->d)), acc[r][t]);
            }
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) SLM__UNROLL4 for (t = 0; t < nt; t++) out[4 * r + t] =
        slm__hsum512(acc[r][t]);
}
SLM__MAYBE_UNUSED static void slm__dotm_q6_K_avx512(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                    int n_super, float *out) {
    float o[4];
    int t;
    switch (nt) {
    case 1: slm__dotr_q6_K_group(w, 0, x, xs, 1, 1, n_super, o); break;
    case 2: slm__dotr_q6_K_group(w, 0, x, xs, 1, 2, n_super, o); break;
    case 3: slm__dotr_q6_K_group(w, 0, x, xs, 1, 3, n_super, o); break;
    default: slm__dotr_q6_K_group(w, 0, x, xs, 1, 4, n_super, o); break;
    }
    for (t = 0; t < nt; t++) out[t] = o[t];
}

/* slm__quantize_q8_K on 16 lanes: the same amax and max (the first element
   of the largest magnitude, NaN ignored), d and quants, rounding the
   product iscale x to the nearest (even) integer as ggml's AVX version of
   quantize_row_q8_K does; the scalar one's iscale x + 1.5 x 2^23 can be
   fused by the compiler, which rounds the exact product instead (a quant
   one apart when the product lies within a rounding of a half). */
SLM__MAYBE_UNUSED static void slm__quantize_q8_K_avx512(const float *x, slm__block_q8_K *y, int n) {
    int b, j;
    for (b = 0; b < n / SLM__QK_K; b++, x += SLM__QK_K) {
        __m512 v[16], am = _mm512_setzero_ps(), amv, iv;
        float amax, max = 0.0f, iscale;
        SLM__UNROLL for (j = 0; j < 16; j++) {
            v[j] = _mm512_loadu_ps(x + 16 * j);
            am = _mm512_max_ps(_mm512_abs_ps(v[j]), am); /* a NaN lane keeps am */
        }
        amax = _mm512_reduce_max_ps(am);
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        amv = _mm512_set1_ps(amax);
        for (j = 0; j < 16; j++) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(v[j]), amv, _CMP_EQ_OQ);
            if (k) {
                int l = 0;
                while (!((k >> l) & 1)) l++;
                max = x[16 * j + l];
                break;
            }
        }
        iscale = -127.0f / max;
        iv = _mm512_set1_ps(iscale);
        SLM__UNROLL for (j = 0; j < 16; j++) {
            __m512 f = _mm512_mul_ps(iv, v[j]);
            /* slm__nearest_int's range (an infinite iscale: subnormal
               blocks), NaN 0, then the int8 cast of min(127, ..) */
            __m512 fc = _mm512_min_ps(_mm512_max_ps(f, _mm512_set1_ps(-4194303.0f)), _mm512_set1_ps(4194303.0f));
            __m512i q = _mm512_min_epi32(_mm512_cvtps_epi32(fc), _mm512_set1_epi32(127));
            q = _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(f, f, _CMP_ORD_Q), q);
            _mm_storeu_si128((__m128i *)(y[b].qs + 16 * j), _mm512_cvtepi32_epi8(q));
            y[b].bsums[j] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        y[b].d = 1.0f / iscale;
    }
}

#if defined(SLM__AVX512_VNNI)
/* q4_K's 12 bytes of scales and mins at q (16 bytes readable) as bytes
   [sc0..sc7, m0..m7], as slm__kq_unpack_scales but in a register: its four
   4-byte stores read back as one 16-byte load defeat store forwarding, a
   stall per block that decode with one token cannot hide */
SLM__INLINE __m128i slm__kq_unpack_scales_128(const uint8_t *q) {
    __m128i u = _mm_loadu_si128((const __m128i *)q);
    __m128i a = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
    __m128i b = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1: their top bits */
    __m128i lo = _mm_and_si128(_mm_srlv_epi32(a, _mm_set_epi32(4, 0, 0, 0)),
                               _mm_set_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
    __m128i hi = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_set_epi32(0x30303030, 0, 0x30303030, 0));
    return _mm_or_si128(lo, hi);
}

/* nr rows (row_size bytes apart) against nt tokens, out[4 * r + t], both
   counts constants where this inlines so that the nr x nt accumulators stay
   in registers. A row's super-block is decoded once for every token. Each
   (row, token) takes the steps of slm__gemm_q4_K_avx512vnni, whatever nr
   and nt: per super-block the exact integers sum_j sc_j x (quants .
   activations of sub-block j) and sum_j m_j x (activation sums of sub-block
   j), then acc += d dx sumi, acc -= dmin dx summ as two fused multiply-adds,
   so that results do not depend on how rows and tokens are grouped (thread
   count, batch). The nr rows' integers are reduced together, into the
   lanes of one vector per token. */
SLM__INLINE void slm__dotr_q4_K_group(const uint8_t *w, size_t row_size, const slm__block_q8_K *x, size_t xs, int nr,
                                      int nt, int n_super, float *out) {
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    __m128 acc[4];
    float lanes[4];
    int i, r, t, k;
    SLM__UNROLL4 for (t = 0; t < nt; t++) acc[t] = _mm_setzero_ps();
    for (i = 0; i < n_super; i++) {
        /* row r, token t: the 8 int32 lanes of the scaled dot products, then the 8 of the min terms */
        __m512i z[4][4];
        uint32_t head[4] = { 0, 0, 0, 0 }; /* d | dmin << 16 */
        __m128i dd;
        __m128 dv, dmv;
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            const uint8_t *blk = w + (size_t)r * row_size + (size_t)i * sizeof(slm__block_q4_K), *qs = blk + 16;
            __m512i q0 = _mm512_loadu_si512((const void *)qs), q1 = _mm512_loadu_si512((const void *)(qs + 64));
            __m512i lo0 = _mm512_and_si512(q0, low4), hi0 = _mm512_and_si512(_mm512_srli_epi16(q0, 4), low4);
            __m512i lo1 = _mm512_and_si512(q1, low4), hi1 = _mm512_and_si512(_mm512_srli_epi16(q1, 4), low4);
            __m512i wv[4], sl[4], sc;
            __m256i mn;
            /* every cache line of the block, not one per block (2.25 lines) */
            _mm_prefetch((const char *)blk + SLM__PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + SLM__PREFETCH + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)blk + SLM__PREFETCH + 128, _MM_HINT_T0);
            /* elements in order: sub-blocks 2k, 2k+1 in wv[k] */
            wv[0] = _mm512_shuffle_i64x2(lo0, hi0, 0x44);
            wv[1] = _mm512_shuffle_i64x2(lo0, hi0, 0xEE);
            wv[2] = _mm512_shuffle_i64x2(lo1, hi1, 0x44);
            wv[3] = _mm512_shuffle_i64x2(lo1, hi1, 0xEE);
            /* scales then mins, each in both int16 halves of a lane */
            sc = _mm512_cvtepu8_epi32(slm__kq_unpack_scales_128(blk + 4));
            sc = _mm512_or_si512(sc, _mm512_slli_epi32(sc, 16));
            SLM__UNROLL4 for (k = 0; k < 4; k++) sl[k] = slm__pair_lanes(sc, 2 * k, 2 * k + 1);
            mn = _mm512_extracti64x4_epi64(sc, 1); /* [m0, m0, m1, m1, ...] as int16 */
            memcpy(&head[r], blk, 4);
            SLM__UNROLL4 for (t = 0; t < nt; t++) {
                const slm__block_q8_K *xt = x + (size_t)t * xs + i;
                __m512i isum = _mm512_setzero_si512();
                __m256i isum8, summ;
                SLM__UNROLL4 for (k = 0; k < 4; k++) isum =
                    slm__dot_scaled_512(isum, wv[k], _mm512_loadu_si512((const void *)(xt->qs + 64 * k)), sl[k]);
                isum8 = _mm256_add_epi32(_mm512_castsi512_si256(isum), _mm512_extracti64x4_epi64(isum, 1));
                summ = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xt->bsums), mn);
                z[r][t] = _mm512_inserti64x4(_mm512_castsi256_si512(isum8), summ, 1);
            }
        }
        SLM__UNROLL4 for (r = nr; r < 4; r++) SLM__UNROLL4 for (t = 0; t < nt; t++) z[r][t] = _mm512_setzero_si512();
        dd = _mm_setr_epi32((int)head[0], (int)head[1], (int)head[2], (int)head[3]);
        /* each lane's two halves, packed (exactly: both fit 16 bits) for the conversion */
        dv = _mm_cvtph_ps(_mm_packus_epi32(_mm_and_si128(dd, _mm_set1_epi32(0xffff)), _mm_setzero_si128()));
        dmv = _mm_cvtph_ps(_mm_packus_epi32(_mm_srli_epi32(dd, 16), _mm_setzero_si128()));
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            /* 128-bit quarter q of u: rows 0..3 in its lanes, quarters 0, 1 the dot products, 2, 3 the mins */
            __m512i t01 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(z[0][t], z[1][t]), _mm512_unpackhi_epi32(z[0][t], z[1][t]));
            __m512i t23 =
                _mm512_add_epi32(_mm512_unpacklo_epi32(z[2][t], z[3][t]), _mm512_unpackhi_epi32(z[2][t], z[3][t]));
            __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
            __m128 dx = _mm_set1_ps(xt->d);
            u = _mm512_add_epi32(u, _mm512_shuffle_i64x2(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
            acc[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(_mm512_castsi512_si128(u)), _mm_mul_ps(dv, dx), acc[t]);
            acc[t] = _mm_fnmadd_ps(_mm_cvtepi32_ps(_mm512_extracti32x4_epi32(u, 2)), _mm_mul_ps(dmv, dx), acc[t]);
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        _mm_storeu_ps(lanes, acc[t]);
        SLM__UNROLL4 for (r = 0; r < nr; r++) out[4 * r + t] = lanes[r];
    }
}

/* The kernel table's slm__dotr_q4_K / slm__dotr_q6_K: nr (1..4) rows
   against nt (1..4) tokens, out[4 * r + t]; four rows in one group, fewer
   one by one, each count a constant in its copy of the loop */
#define SLM__DOTR_K_AVX512VNNI(name, group)                                                                            \
    SLM__MAYBE_UNUSED static void name(const uint8_t *w, size_t row_size, int nr, const slm__block_q8_K *x, size_t xs, \
                                       int nt, int n_super, float *out) {                                              \
        int r;                                                                                                         \
        if (nr == 4) {                                                                                                 \
            switch (nt) {                                                                                              \
            case 1: group(w, row_size, x, xs, 4, 1, n_super, out); break;                                              \
            case 2: group(w, row_size, x, xs, 4, 2, n_super, out); break;                                              \
            case 3: group(w, row_size, x, xs, 4, 3, n_super, out); break;                                              \
            default: group(w, row_size, x, xs, 4, 4, n_super, out); break;                                             \
            }                                                                                                          \
            return;                                                                                                    \
        }                                                                                                              \
        for (r = 0; r < nr; r++) switch (nt) {                                                                         \
            case 1: group(w + (size_t)r * row_size, row_size, x, xs, 1, 1, n_super, out + 4 * r); break;               \
            case 2: group(w + (size_t)r * row_size, row_size, x, xs, 1, 2, n_super, out + 4 * r); break;               \
            case 3: group(w + (size_t)r * row_size, row_size, x, xs, 1, 3, n_super, out + 4 * r); break;               \
            default: group(w + (size_t)r * row_size, row_size, x, xs, 1, 4, n_super, out + 4 * r); break;              \
            }                                                                                                          \
    }
SLM__DOTR_K_AVX512VNNI(slm__dotr_q4_K_avx512vnni, slm__dotr_q4_K_group)
SLM__DOTR_K_AVX512VNNI(slm__dotr_q6_K_rows, slm__dotr_q6_K_group)
/* q6_K's: as those, but a lone token (decode) takes the rows one by one,
   reading the matrix in order: four rows' interleaved streams defeat the
   hardware prefetcher (a 256 MiB matrix of 1024 columns on Zen 5: 24 GB/s
   in groups of four, 32 one by one, the memory read bandwidth; a row group
   saves nothing for one token) */
SLM__MAYBE_UNUSED static void slm__dotr_q6_K_avx512vnni(const uint8_t *w, size_t row_size, int nr,
                                                        const slm__block_q8_K *x, size_t xs, int nt, int n_super,
                                                        float *out) {
    int r;
    if (nt == 1) {
        for (r = 0; r < nr; r++)
            slm__dotr_q6_K_group(w + (size_t)r * row_size, row_size, x, xs, 1, 1, n_super, out + 4 * r);
        return;
    }
    slm__dotr_q6_K_rows(w, row_size, nr, x, xs, nt, n_super, out);
}

/* q4_K prefill: 16 rows against up to SLM__KQ_GEMM_TOK tokens, out[16 * t
   + r]. The rows' super-blocks are decoded once for the whole batch, into
   a scratch with the 16 rows in the lanes of a vector (SLM__KQ_CHUNK
   super-blocks at a time, about 20 KB, to stay in L1), then tiles of 8
   tokens: vpdpbusd of 4 quants (0..15) of each row by 4 activations
   broadcast, 8 per sub-block, times the sub-block's scale per lane, and
   the mins by vpdpwssd against the activation sums. The integers are those
   of slm__dotr_q4_K_group, and so are the float steps of each (row, token):
   results are bitwise the same as one token alone. */
#define SLM__KQ_CHUNK 4

typedef struct slm__q4k_r16 { /* one super-block of 16 rows, row r in lane r */
    __m512i q[64];            /* q[8j + k]: quants 32j + 4k .. + 3 (sub-block j) */
    __m512i sc[8];            /* sub-block j's scale */
    __m512i mn[8];            /* its min in both int16 halves */
    __m512 d, dmin;
} slm__q4k_r16;

/* m[r] lane c becomes m[c] lane r (16 x 16 int32) */
SLM__INLINE void slm__transpose16_epi32(__m512i *m) {
    __m512i t[16], u[16];
    int i, c;
    SLM__UNROLL for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(m[2 * i], m[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(m[2 * i], m[2 * i + 1]);
    }
    SLM__UNROLL4 for (i = 0; i < 4; i++) {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    /* u[4i + c], 128-bit lane L: column 4L + c of rows 4i .. 4i + 3 */
    SLM__UNROLL4 for (c = 0; c < 4; c++) {
        __m512i a0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88), a1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
        __m512i b0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xDD), b1 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xDD);
        m[c] = _mm512_shuffle_i32x4(a0, a1, 0x88);
        m[8 + c] = _mm512_shuffle_i32x4(a0, a1, 0xDD);
        m[4 + c] = _mm512_shuffle_i32x4(b0, b1, 0x88);
        m[12 + c] = _mm512_shuffle_i32x4(b0, b1, 0xDD);
    }
}

/* super-block i of the 16 rows at w into o */
SLM__INLINE void slm__q4k_repack16(const uint8_t *w, size_t row_size, int i, slm__q4k_r16 *o) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), m3f = _mm512_set1_epi32(0x3f3f3f3f);
    const __m512i m0f = _mm512_set1_epi32(0x0f0f0f0f), m03 = _mm512_set1_epi32(0x03030303),
                  mff = _mm512_set1_epi32(0xff);
    const __m512i by_col = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const uint8_t *b0 = w + (size_t)i * sizeof(slm__block_q4_K);
    __m512i m[16], hd[4], p[4], col[4], sc03, sc47, mn03, mn47;
    int r, h, c, j;
    /* the first 16 bytes of each block (d | dmin, then the 12 bytes of
       scales as dwords u0 u1 u2): hd[g], 128-bit lane L = row 4g + L; as
       columns, col[c] lane r = row r's dword c */
    SLM__UNROLL4 for (r = 0; r < 4; r++) {
        hd[r] = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(b0 + (size_t)(4 * r) * row_size)));
        hd[r] = _mm512_inserti32x4(hd[r], _mm_loadu_si128((const __m128i *)(b0 + (size_t)(4 * r + 1) * row_size)), 1);
        hd[r] = _mm512_inserti32x4(hd[r], _mm_loadu_si128((const __m128i *)(b0 + (size_t)(4 * r + 2) * row_size)), 2);
        hd[r] = _mm512_inserti32x4(hd[r], _mm_loadu_si128((const __m128i *)(b0 + (size_t)(4 * r + 3) * row_size)), 3);
        p[r] = _mm512_permutexvar_epi32(by_col, hd[r]); /* 128-bit lane c: dword c of its 4 rows */
    }
    {
        __m512i a = _mm512_shuffle_i32x4(p[0], p[1], 0x44), b = _mm512_shuffle_i32x4(p[2], p[3], 0x44);
        __m512i a2 = _mm512_shuffle_i32x4(p[0], p[1], 0xEE), b2 = _mm512_shuffle_i32x4(p[2], p[3], 0xEE);
        col[0] = _mm512_shuffle_i32x4(a, b, 0x88);
        col[1] = _mm512_shuffle_i32x4(a, b, 0xDD);
        col[2] = _mm512_shuffle_i32x4(a2, b2, 0x88);
        col[3] = _mm512_shuffle_i32x4(a2, b2, 0xDD);
    }
    o->d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(col[0]));
    o->dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(col[0], 16)));
    /* slm__kq_unpack_scales on every lane */
    sc03 = _mm512_and_si512(col[1], m3f);
    sc47 = _mm512_or_si512(_mm512_and_si512(col[3], m0f),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(col[1], 6), m03), 4));
    mn03 = _mm512_and_si512(col[2], m3f);
    mn47 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(col[3], 4), m0f),
                           _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(col[2], 6), m03), 4));
    SLM__UNROLL4 for (j = 0; j < 4; j++) {
        __m512i mlo = _mm512_and_si512(_mm512_srli_epi32(mn03, 8 * j), mff);
        __m512i mhi = _mm512_and_si512(_mm512_srli_epi32(mn47, 8 * j), mff);
        o->sc[j] = _mm512_and_si512(_mm512_srli_epi32(sc03, 8 * j), mff);
        o->sc[4 + j] = _mm512_and_si512(_mm512_srli_epi32(sc47, 8 * j), mff);
        o->mn[j] = _mm512_or_si512(mlo, _mm512_slli_epi32(mlo, 16));
        o->mn[4 + j] = _mm512_or_si512(mhi, _mm512_slli_epi32(mhi, 16));
    }
    /* qs dword 16h + c (bytes 64h + 4c ..) holds in its low nibbles
       elements 128h + 64(c / 8) + 4(c % 8) .., sub-block 4h + 2(c / 8), in
       its high nibbles those of the next sub-block */
    for (h = 0; h < 2; h++) {
        SLM__UNROLL for (r = 0; r < 16; r++) m[r] =
            _mm512_loadu_si512((const void *)(b0 + (size_t)r * row_size + 16 + 64 * h));
        slm__transpose16_epi32(m);
        SLM__UNROLL for (c = 0; c < 16; c++) {
            int v = 32 * h + 16 * (c / 8) + c % 8;
            o->q[v] = _mm512_and_si512(m[c], low4);
            o->q[v + 8] = _mm512_and_si512(_mm512_srli_epi16(m[c], 4), low4);
        }
    }
}

/* ns super-blocks of s against nt (a constant where this inlines, 1..8)
   tokens x (token t at x + t * xs), acc[16 * t + r] += */
SLM__INLINE void slm__gemm_q4_K_tile(const slm__q4k_r16 *s, int ns, const slm__block_q8_K *x, size_t xs, int nt,
                                     float *accp) {
    __m512 acc[8];
    int i, j, k, t;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_loadu_ps(accp + 16 * t);
    for (i = 0; i < ns; i++) {
        __m512i sumi[8];
        SLM__UNROLL for (t = 0; t < nt; t++) sumi[t] = _mm512_setzero_si512();
        for (j = 0; j < 8; j++) {
            __m512i isum[8], scj = s[i].sc[j];
            SLM__UNROLL for (t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
            SLM__UNROLL for (k = 0; k < 8; k++) {
                __m512i wq = s[i].q[8 * j + k];
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    int32_t a;
                    memcpy(&a, x[(size_t)t * xs + i].qs + 32 * j + 4 * k, 4);
                    isum[t] = _mm512_dpbusd_epi32(isum[t], wq, _mm512_set1_epi32(a));
                }
            }
            SLM__UNROLL for (t = 0; t < nt; t++) sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(isum[t], scj));
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            __m512 dx = _mm512_set1_ps(xt->d);
            __m512i summ = _mm512_setzero_si512();
            SLM__UNROLL for (j = 0; j < 8; j++) {
                int32_t b;
                memcpy(&b, xt->bsums + 2 * j, 4);
                summ = _mm512_dpwssd_epi32(summ, s[i].mn[j], _mm512_set1_epi32(b));
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi[t]), _mm512_mul_ps(s[i].d, dx), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(s[i].dmin, dx), acc[t]);
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) _mm512_storeu_ps(accp + 16 * t, acc[t]);
}

/* The kernel table's slm__gemm_q4_K: 16 rows (row_size bytes apart) against
   nt (1..SLM__KQ_GEMM_TOK) tokens, out[16 * t + r] */
SLM__MAYBE_UNUSED static void slm__gemm_q4_K_avx512vnni(const uint8_t *w, size_t row_size, int n_super,
                                                        const slm__block_q8_K *x, size_t xs, int nt, float *out) {
    slm__q4k_r16 s[SLM__KQ_CHUNK];
    int i0, i, t;
    memset(out, 0, (size_t)nt * 16 * sizeof(float));
    for (i0 = 0; i0 < n_super; i0 += SLM__KQ_CHUNK) {
        int ns = SLM__MIN(SLM__KQ_CHUNK, n_super - i0);
        for (i = 0; i < ns; i++) slm__q4k_repack16(w, row_size, i0 + i, &s[i]);
        {
            /* the next chunk (of these rows, else of the next 16: most
               often this thread's next call) comes from memory while the
               tiles below run: the repack's loads otherwise wait for it */
            int n0 = i0 + SLM__KQ_CHUNK, r;
            const uint8_t *next = n0 < n_super ? w + (size_t)n0 * sizeof(slm__block_q4_K) : w + 16 * row_size;
            size_t len =
                (size_t)SLM__MIN(SLM__KQ_CHUNK, n0 < n_super ? n_super - n0 : n_super) * sizeof(slm__block_q4_K);
            for (r = 0; r < 16; r++) {
                size_t o;
                for (o = 0; o < len + 63; o += 64)
                    _mm_prefetch((const char *)next + (size_t)r * row_size + o, _MM_HINT_T0);
            }
        }
        for (t = 0; t < nt; t += 8) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i0;
            float *o = out + 16 * t;
            switch (SLM__MIN(8, nt - t)) {
            case 1: slm__gemm_q4_K_tile(s, ns, xt, xs, 1, o); break;
            case 2: slm__gemm_q4_K_tile(s, ns, xt, xs, 2, o); break;
            case 3: slm__gemm_q4_K_tile(s, ns, xt, xs, 3, o); break;
            case 4: slm__gemm_q4_K_tile(s, ns, xt, xs, 4, o); break;
            case 5: slm__gemm_q4_K_tile(s, ns, xt, xs, 5, o); break;
            case 6: slm__gemm_q4_K_tile(s, ns, xt, xs, 6, o); break;
            case 7: slm__gemm_q4_K_tile(s, ns, xt, xs, 7, o); break;
            default: slm__gemm_q4_K_tile(s, ns, xt, xs, 8, o); break;
            }
        }
    }
}
#endif

/* q5_0 (has_m 0) and q5_1 against q8_0, two blocks at a time as q4_0 */
SLM__INLINE void slm__dotm_q5_avx512(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, int nt,
                                     int n_blocks, float *out, int has_m) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    const __m512i sixteen = _mm512_set1_epi8(16);
    size_t bb = has_m ? sizeof(slm__block_q5_1) : sizeof(slm__block_q5_0);
    __m512 acc[4];
    float accm[4];
    int b, t;
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        acc[t] = _mm512_setzero_ps();
        accm[t] = 0.0f;
    }
    for (b = 0; b + 2 <= n_blocks; b += 2) {
        const uint8_t *b0 = w + (size_t)b * bb, *b1 = b0 + bb, *q0 = b0 + bb - 16, *q1 = b1 + bb - 16;
        uint32_t h0, h1;
        uint16_t d0, d1, m0 = 0, m1 = 0;
        __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)q0)),
                                             _mm_loadu_si128((const __m128i *)q1), 1);
        __m256i lo = _mm256_and_si256(ab, low4), hi = _mm256_and_si256(_mm256_srli_epi16(ab, 4), low4);
        /* [b.lo b.hi | b+1.lo b+1.hi]: the elements of two blocks in order */
        __m512i wv = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_permute2x128_si256(lo, hi, 0x20)),
                                        _mm256_permute2x128_si256(lo, hi, 0x31), 1);
        float dw0, dw1, mw0, mw1;
        _mm_prefetch((const char *)b0 + SLM__PREFETCH, _MM_HINT_T0);
        memcpy(&h0, q0 - 4, 4);
        memcpy(&h1, q1 - 4, 4);
        wv = _mm512_mask_mov_epi8(wv, (__mmask64)h0 | (__mmask64)h1 << 32, _mm512_or_si512(wv, sixteen));
        memcpy(&d0, b0, 2);
        memcpy(&d1, b1, 2);
        if (has_m) {
            memcpy(&m0, b0 + 2, 2);
            memcpy(&m1, b1 + 2, 2);
        }
        dw0 = slm_fp16_to_fp32(d0);
        dw1 = slm_fp16_to_fp32(d1);
        mw0 = slm_fp16_to_fp32(m0);
        mw1 = slm_fp16_to_fp32(m1);
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_0 *xt = x + (size_t)t * xs + b;
            __m512i xv = slm__load_2x32(xt[0].q, xt[1].q), sumi = slm__dot_u8s8_512(wv, xv);
            float dx0 = slm_fp16_to_fp32(xt[0].d), dx1 = slm_fp16_to_fp32(xt[1].d);
            if (!has_m) sumi = _mm512_sub_epi32(sumi, slm__dot_u8s8_512(sixteen, xv));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), slm__pair_scales(dw0 * dx0, dw1 * dx1), acc[t]);
            if (has_m) {
                const int32_t *st = xsum + (size_t)t * xs + b;
                accm[t] += (float)st[0] * (mw0 * dx0) + (float)st[1] * (mw1 * dx1);
            }
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        float tail = 0.0f;
        if (b < n_blocks)
            tail = has_m ? slm__dot_q5_1_ref(w + (size_t)b * bb, x + (size_t)t * xs + b, xsum + (size_t)t * xs + b,
                                             n_blocks - b)
                         : slm__dot_q5_0_ref(w + (size_t)b * bb, x + (size_t)t * xs + b, xsum + (size_t)t * xs + b,
                                             n_blocks - b);
        out[t] = slm__hsum512(acc[t]) + accm[t] + tail;
    }
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_0_avx512(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                    size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_avx512(w, x, xsum, xs, nt, n_blocks, out, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_1_avx512(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                    size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_avx512(w, x, xsum, xs, nt, n_blocks, out, 1);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX2) && defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
/* u8 x s8 products summed in groups of four into 8 int32 lanes (pairs fit int16: quants <= 63) */
SLM__INLINE __m256i slm__dot_u8s8_256(__m256i u, __m256i s) {
#if defined(SLM__AVXVNNI)
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

SLM__INLINE void slm__dotm_q45k_avx2(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super,
                                     float *out, int five) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16);
    __m256 acc[4], accm[4];
    size_t bb = five ? sizeof(slm__block_q5_K) : sizeof(slm__block_q4_K);
    int i, c, t;
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        acc[t] = _mm256_setzero_ps();
        accm[t] = _mm256_setzero_ps();
    }
    for (i = 0; i < n_super; i++) {
        const uint8_t *blk = w + (size_t)i * bb, *qs = blk + (five ? 48 : 16);
        uint8_t sm[16];
        uint16_t d16, dmin16;
        __m256i wv[8], qh = _mm256_setzero_si256(), mn;
        float dw, dmw;
        _mm_prefetch((const char *)blk + SLM__PREFETCH, _MM_HINT_T0);
        memcpy(&d16, blk, 2);
        memcpy(&dmin16, blk + 2, 2);
        dw = slm_fp16_to_fp32(d16);
        dmw = slm_fp16_to_fp32(dmin16);
        slm__kq_unpack_scales(blk + 4, sm);
        mn = slm__kq_mins_pairs(sm + 8);
        if (five) qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
        for (c = 0; c < 4; c++) { /* sub-blocks 2c (low nibbles) and 2c+1 (high) */
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            wv[2 * c] = _mm256_and_si256(q, low4);
            wv[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (five) {
                __m256i b0 = _mm256_set1_epi8((char)(1 << (2 * c))), b1 = _mm256_set1_epi8((char)(2 << (2 * c)));
                wv[2 * c] = _mm256_or_si256(wv[2 * c],
                                            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b0), b0), sixteen));
                wv[2 * c + 1] = _mm256_or_si256(
                    wv[2 * c + 1], _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), sixteen));
            }
        }
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            __m256i isum = _mm256_setzero_si256();
            int j;
            for (j = 0; j < 8; j++)
                isum = _mm256_add_epi32(
                    isum, _mm256_madd_epi16(
                              _mm256_maddubs_epi16(wv[j], _mm256_loadu_si256((const __m256i *)(xt->qs + 32 * j))),
                              _mm256_set1_epi16(sm[j])));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * xt->d), acc[t]);
            accm[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xt->bsums), mn)),
                _mm256_set1_ps(dmw * xt->d), accm[t]);
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) out[t] = slm__hsum256(acc[t]) - slm__hsum256(accm[t]);
}
SLM__MAYBE_UNUSED static void slm__dotm_q4_K_avx2(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    slm__dotm_q45k_avx2(w, x, xs, nt, n_super, out, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_K_avx2(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    slm__dotm_q45k_avx2(w, x, xs, nt, n_super, out, 1);
}

SLM__MAYBE_UNUSED static void slm__dotm_q6_K_avx2(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    const __m256i low4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc[4];
    int i, h, t, g;
    SLM__UNROLL4 for (t = 0; t < nt; t++) acc[t] = _mm256_setzero_ps();
    for (i = 0; i < n_super; i++) {
        const slm__block_q6_K *blk = (const slm__block_q6_K *)w + i;
        __m256i q[8], s[8], s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)blk->scales));
        float dw = slm_fp16_to_fp32(blk->d);
        _mm_prefetch((const char *)blk + SLM__PREFETCH, _MM_HINT_T0);
        for (h = 0; h < 2; h++) {
            __m256i la = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h)),
                    lb = _mm256_loadu_si256((const __m256i *)(blk->ql + 64 * h + 32)),
                    qh = _mm256_loadu_si256((const __m256i *)(blk->qh + 32 * h));
            /* the two high bits of group g sit at bits 2g of qh; moved to bits 4-5 */
            q[4 * h] = _mm256_or_si256(_mm256_and_si256(la, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(lb, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), low4), _mm256_and_si256(qh, m30));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), low4),
                                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        }
        for (g = 0; g < 8; g++) /* 32 elements: sub-blocks 2g and 2g+1 */
            s[g] = _mm256_inserti128_si256(_mm256_set1_epi16(blk->scales[2 * g]),
                                           _mm_set1_epi16(blk->scales[2 * g + 1]), 1);
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            __m256i isum = _mm256_setzero_si256();
            for (g = 0; g < 8; g++)
                isum = _mm256_add_epi32(
                    isum,
                    _mm256_madd_epi16(
                        _mm256_maddubs_epi16(q[g], _mm256_loadu_si256((const __m256i *)(xt->qs + 32 * g))), s[g]));
            /* the +32 of every quant: 32 x scale x the activations' sums of 16 */
            isum = _mm256_sub_epi32(
                isum, _mm256_slli_epi32(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)xt->bsums), s16), 5));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * xt->d), acc[t]);
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) out[t] = slm__hsum256(acc[t]);
}

/* q5_0 (has_m 0) and q5_1 against q8_0, one block at a time */
SLM__INLINE void slm__dotm_q5_avx2(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, int nt,
                                   int n_blocks, float *out, int has_m) {
    const __m128i low4 = _mm_set1_epi8(0x0f);
    const __m256i sixteen = _mm256_set1_epi8(16), bit = _mm256_set1_epi64x(0x8040201008040201LL),
                  spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3,
                                            3, 3, 3, 3, 3, 3, 3);
    size_t bb = has_m ? sizeof(slm__block_q5_1) : sizeof(slm__block_q5_0);
    __m256 acc[4];
    float accs[4];
    int b, t;
    SLM__UNROLL4 for (t = 0; t < nt; t++) {
        acc[t] = _mm256_setzero_ps();
        accs[t] = 0.0f;
    }
    for (b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * bb, *qs = blk + bb - 16;
        uint32_t h;
        uint16_t d16, m16 = 0;
        float dw, mw;
        __m128i q = _mm_loadu_si128((const __m128i *)qs);
        __m256i wv = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(q, low4)),
                                             _mm_and_si128(_mm_srli_epi16(q, 4), low4), 1),
                hb;
        _mm_prefetch((const char *)blk + SLM__PREFETCH, _MM_HINT_T0);
        memcpy(&h, qs - 4, 4);
        /* bit j of qh to byte j: each byte takes its qh byte, then tests its own bit */
        hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread);
        hb = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
        wv = _mm256_or_si256(wv, _mm256_and_si256(hb, sixteen));
        memcpy(&d16, blk, 2);
        if (has_m) memcpy(&m16, blk + 2, 2);
        dw = slm_fp16_to_fp32(d16);
        mw = slm_fp16_to_fp32(m16);
        SLM__UNROLL4 for (t = 0; t < nt; t++) {
            const slm__block_q8_0 *xt = x + (size_t)t * xs + b;
            float dx = slm_fp16_to_fp32(xt->d), s = dw * dx;
            int32_t st = xsum[(size_t)t * xs + b];
            acc[t] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(slm__dot_u8s8_256(wv, _mm256_loadu_si256((const __m256i *)xt->q))),
                                _mm256_set1_ps(s), acc[t]);
            if (has_m)
                accs[t] += (float)st * (mw * dx);
            else
                accs[t] -= (float)(16 * st) * s;
        }
    }
    SLM__UNROLL4 for (t = 0; t < nt; t++) out[t] = slm__hsum256(acc[t]) + accs[t];
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_0_avx2(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                  size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_avx2(w, x, xsum, xs, nt, n_blocks, out, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_1_avx2(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                  size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_avx2(w, x, xsum, xs, nt, n_blocks, out, 1);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__NEON)
static float slm__dot_f32_neon(const float *w, const float *x, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int j = 0;
    float sum;
    for (; j + 4 <= n; j += 4) acc = vfmaq_f32(acc, vld1q_f32(w + j), vld1q_f32(x + j));
    sum = vaddvq_f32(acc);
    for (; j < n; j++) sum += w[j] * x[j];
    return sum;
}

static float slm__dot_f16_neon(const uint16_t *w, const float *x, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int j = 0;
    float sum;
    for (; j + 4 <= n; j += 4)
        acc = vfmaq_f32(acc, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(w + j))), vld1q_f32(x + j));
    sum = vaddvq_f32(acc);
    for (; j < n; j++) sum += slm_fp16_to_fp32(w[j]) * x[j];
    return sum;
}

static float slm__dot_bf16_neon(const uint16_t *w, const float *x, int n) {
    float32x4_t acc = vdupq_n_f32(0.0f);
    int j = 0;
    float sum;
    for (; j + 4 <= n; j += 4)
        acc = vfmaq_f32(acc, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(w + j), 16)), vld1q_f32(x + j));
    sum = vaddvq_f32(acc);
    for (; j < n; j++) sum += slm_bf16_to_fp32(w[j]) * x[j];
    return sum;
}

/* The integer kernels of the two NEON sets are one text: each _neon_any
   body takes dotprod, a constant at each call, and its _neon and _dotprod
   kernels are the calls with 0 and 1, the latter under the dot product's
   function target in an SLM_DISPATCH build (which has both sets). Integer
   sums are exact, so both give the same results. The sdot helpers are not
   forced inline: a body compiled for plain NEON names them, and only a
   _dotprod kernel, which has their target, inlines them. */
#if defined(SLM__NEON_DOTPROD)
SLM__TARGET_DOTPROD_BEGIN
/* acc + sums of four products of a's and b's bytes in each int32 lane */
static inline int32x4_t slm__sdot_s8x16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
    /* clang 14's arm_neon.h declares vdotq_s32 only for a dot product build; 34: int32x4_t */
    return (int32x4_t)__builtin_neon_vdotq_v((int8x16_t)acc, a, b, 34);
#else
    return vdotq_s32(acc, a, b);
#endif
}
/* the same with lane `lane` of b in every lane (b's bytes 4 lane..4 lane+3) */
static inline int32x4_t slm__sdot_lane_s8x16(int32x4_t acc, int8x16_t a, int8x16_t b, int lane) {
    switch (lane) { /* the lane of an instruction is an immediate */
#if defined(__clang__) && !defined(__ARM_FEATURE_DOTPROD)
    case 0: return slm__sdot_s8x16(acc, a, vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(b), 0)));
    case 1: return slm__sdot_s8x16(acc, a, vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(b), 1)));
    case 2: return slm__sdot_s8x16(acc, a, vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(b), 2)));
    default: return slm__sdot_s8x16(acc, a, vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(b), 3)));
#else
    case 0: return vdotq_laneq_s32(acc, a, b, 0);
    case 1: return vdotq_laneq_s32(acc, a, b, 1);
    case 2: return vdotq_laneq_s32(acc, a, b, 2);
    default: return vdotq_laneq_s32(acc, a, b, 3);
#endif
    }
}
SLM__TARGET_END
#define SLM__SDOT(acc, a, b)            slm__sdot_s8x16((acc), (a), (b))
#define SLM__SDOT_LANE(acc, a, b, lane) slm__sdot_lane_s8x16((acc), (a), (b), (lane))
#else /* never called: dotprod is 0 in every body's call */
#define SLM__SDOT(acc, a, b)            (acc)
#define SLM__SDOT_LANE(acc, a, b, lane) (acc)
#endif

/* sum of a[i] * b[i] over 16 signed bytes, in four int32 lanes */
SLM__INLINE int32x4_t slm__dot_s8x16(int32x4_t acc, int8x16_t a, int8x16_t b, const int dotprod) {
    int16x8_t p;
    if (dotprod) return SLM__SDOT(acc, a, b);
    p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_s8(p, vget_high_s8(a), vget_high_s8(b)); /* |sum of two| <= 2 * 127 * 128: fits */
    return vpadalq_s16(acc, p);
}

/* nr (1..4) rows against one activation vector; per-row arithmetic independent of nr */
SLM__INLINE void slm__dotn_q8_0_neon_any(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x,
                                         int n_blocks, float *out, const int dotprod) {
    float32x4_t acc[4];
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = vdupq_n_f32(0.0f);
    for (b = 0; b < n_blocks; b++) {
        int8x16_t x0 = vld1q_s8(x[b].q), x1 = vld1q_s8(x[b].q + 16);
        float dx = slm_fp16_to_fp32(x[b].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            int32x4_t sumi;
            __builtin_prefetch((const char *)(w[r] + b) + SLM__PREFETCH);
            sumi = slm__dot_s8x16(slm__dot_s8x16(vdupq_n_s32(0), vld1q_s8(w[r][b].q), x0, dotprod),
                                  vld1q_s8(w[r][b].q + 16), x1, dotprod);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(sumi), slm_fp16_to_fp32(w[r][b].d) * dx);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] = vaddvq_f32(acc[r]);
}

SLM__INLINE void slm__dotn_q4_0_neon_any(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x,
                                         int n_blocks, float *out, const int dotprod) {
    float32x4_t acc[4];
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    int b, r;
    SLM__UNROLL4 for (r = 0; r < nr; r++) acc[r] = vdupq_n_f32(0.0f);
    for (b = 0; b < n_blocks; b++) {
        int8x16_t x0 = vld1q_s8(x[b].q), x1 = vld1q_s8(x[b].q + 16);
        float dx = slm_fp16_to_fp32(x[b].d);
        SLM__UNROLL4 for (r = 0; r < nr; r++) {
            uint8x16_t q;
            int8x16_t lo, hi;
            int32x4_t sumi;
            __builtin_prefetch((const char *)(w[r] + b) + SLM__PREFETCH);
            q = vld1q_u8(w[r][b].q);
            lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, low4)), eight);
            hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);
            sumi = slm__dot_s8x16(slm__dot_s8x16(vdupq_n_s32(0), lo, x0, dotprod), hi, x1, dotprod);
            acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(sumi), slm_fp16_to_fp32(w[r][b].d) * dx);
        }
    }
    SLM__UNROLL4 for (r = 0; r < nr; r++) out[r] = vaddvq_f32(acc[r]);
}
SLM__INLINE void slm__dotn_q8_0_neon(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                     float *out) {
    slm__dotn_q8_0_neon_any(w, nr, x, n_blocks, out, 0);
}
SLM__INLINE void slm__dotn_q4_0_neon(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                     float *out) {
    slm__dotn_q4_0_neon_any(w, nr, x, n_blocks, out, 0);
}
#if defined(SLM__NEON_DOTPROD)
SLM__TARGET_DOTPROD_BEGIN
SLM__INLINE void slm__dotn_q8_0_dotprod(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                        float *out) {
    slm__dotn_q8_0_neon_any(w, nr, x, n_blocks, out, 1);
}
SLM__INLINE void slm__dotn_q4_0_dotprod(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks,
                                        float *out) {
    slm__dotn_q4_0_neon_any(w, nr, x, n_blocks, out, 1);
}
SLM__TARGET_END
#endif
#endif

#if defined(SLM__NEON)
/* q5_0/q5_1 and K-quant kernels for NEON (sdot with the dot product
   extension, else widening multiplies): each block or super-block is
   decoded once into signed bytes, then dotted with every token's
   activations; integer sums per (sub-)block, the float steps of the
   reference in its order. */

/* 16 bytes of a q5_0/q5_1 block's quants (lo: elements 0..15, else 16..31) with their fifth bits */
SLM__INLINE uint8x16_t slm__q5_half_neon(uint8x16_t nib, uint32_t qh, int hi) {
    static const uint8_t bits[16] = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    uint8x16_t hb = vcombine_u8(vdup_n_u8((uint8_t)(qh >> (hi ? 16 : 0))), vdup_n_u8((uint8_t)(qh >> (hi ? 24 : 8))));
    return vorrq_u8(nib, vandq_u8(vtstq_u8(hb, vld1q_u8(bits)), vdupq_n_u8(16)));
}

SLM__INLINE void slm__dotm_q5_neon(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, int nt,
                                   int n_blocks, float *out, int has_m, const int dotprod) {
    size_t bb = has_m ? sizeof(slm__block_q5_1) : sizeof(slm__block_q5_0);
    float sum[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    int b, t;
    for (b = 0; b < n_blocks; b++) {
        const uint8_t *blk = w + (size_t)b * bb, *qs = blk + bb - 16;
        uint32_t qh;
        uint16_t d16, m16 = 0;
        uint8x16_t q = vld1q_u8(qs);
        int8x16_t lo, hi;
        float dw, mw;
        memcpy(&qh, qs - 4, 4);
        memcpy(&d16, blk, 2);
        if (has_m) memcpy(&m16, blk + 2, 2);
        dw = slm_fp16_to_fp32(d16);
        mw = slm_fp16_to_fp32(m16);
        lo = vreinterpretq_s8_u8(slm__q5_half_neon(vandq_u8(q, vdupq_n_u8(15)), qh, 0));
        hi = vreinterpretq_s8_u8(slm__q5_half_neon(vshrq_n_u8(q, 4), qh, 1));
        if (!has_m) {
            lo = vsubq_s8(lo, vdupq_n_s8(16));
            hi = vsubq_s8(hi, vdupq_n_s8(16));
        }
        for (t = 0; t < nt; t++) {
            const slm__block_q8_0 *xt = x + (size_t)t * xs + b;
            int32x4_t s = slm__dot_s8x16(vdupq_n_s32(0), lo, vld1q_s8(xt->q), dotprod);
            float dx = slm_fp16_to_fp32(xt->d);
            s = slm__dot_s8x16(s, hi, vld1q_s8(xt->q + 16), dotprod);
            if (has_m)
                sum[t] += (float)vaddvq_s32(s) * (dw * dx) + (float)xsum[(size_t)t * xs + b] * (mw * dx);
            else
                sum[t] += (float)vaddvq_s32(s) * (dw * dx);
        }
    }
    for (t = 0; t < nt; t++) out[t] = sum[t];
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_0_neon(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                  size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_neon(w, x, xsum, xs, nt, n_blocks, out, 0, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_1_neon(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                  size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_neon(w, x, xsum, xs, nt, n_blocks, out, 1, 0);
}

/* q4_K (five 0) and q5_K against q8_K */
SLM__INLINE void slm__dotm_q45k_neon(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super,
                                     float *out, int five, const int dotprod) {
    size_t bb = five ? sizeof(slm__block_q5_K) : sizeof(slm__block_q4_K);
    float sum[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    int i, c, h, j, t;
    for (i = 0; i < n_super; i++) {
        const uint8_t *blk = w + (size_t)i * bb, *qs = blk + (five ? 48 : 16);
        int8x16_t q[16]; /* elements 16k..16k+15 */
        uint8_t sm[16];
        uint16_t d16, dmin16;
        float dw, dmw;
        memcpy(&d16, blk, 2);
        memcpy(&dmin16, blk + 2, 2);
        dw = slm_fp16_to_fp32(d16);
        dmw = slm_fp16_to_fp32(dmin16);
        slm__kq_unpack_scales(blk + 4, sm);
        for (c = 0; c < 4; c++)
            for (h = 0; h < 2; h++) {
                uint8x16_t v = vld1q_u8(qs + 32 * c + 16 * h), lo = vandq_u8(v, vdupq_n_u8(15)), hi = vshrq_n_u8(v, 4);
                if (five) {
                    uint8x16_t qh = vld1q_u8(blk + 16 + 16 * h);
                    lo = vorrq_u8(lo, vandq_u8(vtstq_u8(qh, vdupq_n_u8((uint8_t)(1 << (2 * c)))), vdupq_n_u8(16)));
                    hi = vorrq_u8(hi, vandq_u8(vtstq_u8(qh, vdupq_n_u8((uint8_t)(2 << (2 * c)))), vdupq_n_u8(16)));
                }
                q[4 * c + h] = vreinterpretq_s8_u8(lo);
                q[4 * c + 2 + h] = vreinterpretq_s8_u8(hi);
            }
        for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            int sumi = 0, summ = 0;
            for (j = 0; j < 8; j++) {
                int32x4_t s = slm__dot_s8x16(vdupq_n_s32(0), q[2 * j], vld1q_s8(xt->qs + 32 * j), dotprod);
                s = slm__dot_s8x16(s, q[2 * j + 1], vld1q_s8(xt->qs + 32 * j + 16), dotprod);
                sumi += sm[j] * vaddvq_s32(s);
                summ += sm[8 + j] * (xt->bsums[2 * j] + xt->bsums[2 * j + 1]);
            }
            sum[t] += (dw * xt->d) * (float)sumi - (dmw * xt->d) * (float)summ;
        }
    }
    for (t = 0; t < nt; t++) out[t] = sum[t];
}
SLM__MAYBE_UNUSED static void slm__dotm_q4_K_neon(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    slm__dotm_q45k_neon(w, x, xs, nt, n_super, out, 0, 0);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_K_neon(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    slm__dotm_q45k_neon(w, x, xs, nt, n_super, out, 1, 0);
}

/* q6_K against q8_K: quants decoded to -32..31 */
SLM__INLINE void slm__dotm_q6_K_neon_any(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super,
                                         float *out, const int dotprod) {
    float sum[4] = { 0.0f, 0.0f, 0.0f, 0.0f };
    int i, h, g, k, t;
    for (i = 0; i < n_super; i++) {
        const slm__block_q6_K *blk = (const slm__block_q6_K *)w + i;
        int8x16_t q[16]; /* sub-block k: elements 16k..16k+15 */
        float dw = slm_fp16_to_fp32(blk->d);
        for (h = 0; h < 2; h++)
            for (k = 0; k < 2; k++) { /* bytes 16k.. of each 32-byte row of ql and qh */
                uint8x16_t la = vld1q_u8(blk->ql + 64 * h + 16 * k), lb = vld1q_u8(blk->ql + 64 * h + 32 + 16 * k),
                           qh = vld1q_u8(blk->qh + 32 * h + 16 * k), three = vdupq_n_u8(3), low4 = vdupq_n_u8(15);
                uint8x16_t g0 = vorrq_u8(vandq_u8(la, low4), vshlq_n_u8(vandq_u8(qh, three), 4));
                uint8x16_t g1 = vorrq_u8(vandq_u8(lb, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 2), three), 4));
                uint8x16_t g2 = vorrq_u8(vshrq_n_u8(la, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(qh, 4), three), 4));
                uint8x16_t g3 = vorrq_u8(vshrq_n_u8(lb, 4), vshlq_n_u8(vshrq_n_u8(qh, 6), 4));
                q[8 * h + k] = vsubq_s8(vreinterpretq_s8_u8(g0), vdupq_n_s8(32));
                q[8 * h + 2 + k] = vsubq_s8(vreinterpretq_s8_u8(g1), vdupq_n_s8(32));
                q[8 * h + 4 + k] = vsubq_s8(vreinterpretq_s8_u8(g2), vdupq_n_s8(32));
                q[8 * h + 6 + k] = vsubq_s8(vreinterpretq_s8_u8(g3), vdupq_n_s8(32));
            }
        for (t = 0; t < nt; t++) {
            const slm__block_q8_K *xt = x + (size_t)t * xs + i;
            int sumi = 0;
            for (g = 0; g < 16; g++)
                sumi += blk->scales[g] *
                        vaddvq_s32(slm__dot_s8x16(vdupq_n_s32(0), q[g], vld1q_s8(xt->qs + 16 * g), dotprod));
            sum[t] += (dw * xt->d) * (float)sumi;
        }
    }
    for (t = 0; t < nt; t++) out[t] = sum[t];
}
SLM__MAYBE_UNUSED static void slm__dotm_q6_K_neon(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                  int n_super, float *out) {
    slm__dotm_q6_K_neon_any(w, x, xs, nt, n_super, out, 0);
}
#if defined(SLM__NEON_DOTPROD)
SLM__TARGET_DOTPROD_BEGIN
SLM__MAYBE_UNUSED static void slm__dotm_q5_0_dotprod(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                     size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_neon(w, x, xsum, xs, nt, n_blocks, out, 0, 1);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_1_dotprod(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum,
                                                     size_t xs, int nt, int n_blocks, float *out) {
    slm__dotm_q5_neon(w, x, xsum, xs, nt, n_blocks, out, 1, 1);
}
SLM__MAYBE_UNUSED static void slm__dotm_q4_K_dotprod(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                     int n_super, float *out) {
    slm__dotm_q45k_neon(w, x, xs, nt, n_super, out, 0, 1);
}
SLM__MAYBE_UNUSED static void slm__dotm_q5_K_dotprod(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                     int n_super, float *out) {
    slm__dotm_q45k_neon(w, x, xs, nt, n_super, out, 1, 1);
}
SLM__MAYBE_UNUSED static void slm__dotm_q6_K_dotprod(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt,
                                                     int n_super, float *out) {
    slm__dotm_q6_K_neon_any(w, x, xs, nt, n_super, out, 1);
}
SLM__TARGET_END
#endif
#endif

/* The _R16 kernels. One 64-byte line of a group holds 4 elements of 16 rows:
   multiplied by the same 4 activations of a token, broadcast, it adds to 16
   row sums at once, with no horizontal sums and one vector of 16 scales per
   block. With AVX-512 a line is one register and one dot product per token;
   with AVX2, two. Before them, the activation quantizer and the value-cache
   axpy, whose AVX2 versions the AVX-512 builds share. */
#if defined(SLM__AVX2)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__MAYBE_UNUSED static void slm__axpy_f32_avx2(float *out, float a, const float *v, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] = fmaf(a, v[i], out[i]); /* fused, as the vector part and slm__attn_values_* */
}
#if defined(SLM__F16C)
SLM__MAYBE_UNUSED static void slm__axpy_f16_avx2(float *out, float a, const uint16_t *v, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))),
                                                  _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] = fmaf(a, slm_fp16_to_fp32(v[i]), out[i]);
}
#endif

/* As slm__quantize_act_blocks_ref, except that a product exactly halfway between two
   integers rounds to even (as GGML's own AVX2 quantizer) and NaN becomes
   -127 instead of 0. */
SLM__MAYBE_UNUSED static void slm__quantize_act_blocks_avx2(const float *x, slm__block_q8_0 *q, int32_t *sum, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    int b, i;
    for (b = 0; b < n / SLM__QK; b++) {
        __m256 v[4], m;
        __m128 m4;
        __m256i i32[4], p16a, p16b, p8;
        float amax, d, id;
        SLM__UNROLL for (i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(x + b * SLM__QK + 8 * i);
        m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                          _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        amax = _mm_cvtss_f32(m4);
        d = amax / 127.0f;
        id = d != 0.0f ? 1.0f / d : 0.0f;
        q[b].d = slm_fp32_to_fp16(d);
        SLM__UNROLL for (i = 0; i < 4; i++) {
            __m256 r =
                _mm256_round_ps(_mm256_mul_ps(v[i], _mm256_set1_ps(id)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            i32[i] = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, nlim), lim));
        }
        /* packs interleave 128-bit lanes: the permute puts the 32 bytes back in order */
        p16a = _mm256_packs_epi32(i32[0], i32[1]);
        p16b = _mm256_packs_epi32(i32[2], i32[3]);
        p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)q[b].q, p8);
        {
            __m256i s32 = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            sum[b] = _mm_cvtsi128_si32(s4);
        }
    }
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
#if defined(__GNUC__) && !defined(__clang__)
/* g++ 12's false positive in its own AVX-512 headers, as above */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
SLM__INLINE __m512i slm__bcast4_512(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* nt (1 or 2) is a constant at each call, so the token loops unroll into
   registers. Each row's lane sees the integer sum of the reference, exactly,
   and then the float steps of the AVX2 kernel: the two give the same bits. For AVX-512
   without VNNI (Skylake-X): VNNI builds run slm__gemm_r16_nt_avx512vnni. */
SLM__INLINE void slm__gemm_r16_nt_avx512(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                         const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    const int is_q8 = type == SLM_TYPE_Q8_0_R16;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m512i low4 = _mm512_set1_epi8(0x0f);
    const __m512i ones = _mm512_set1_epi16(1);
    __m512 acc[2];
    int b, k, t;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)slm__r16_scales(group, b)));
        __m512i isum[2];
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
        if (is_q8) {
            /* (w + 128) * x pairs would saturate vpmaddubsw's int16: |w| times x
               with w's sign instead, as the AVX2 kernel */
            for (k = 0; k < 8; k++) {
                __m512i wv = _mm512_loadu_si512((const void *)(q + k * line)), aw = _mm512_abs_epi8(wv);
                __mmask64 neg = _mm512_movepi8_mask(wv);
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    __m512i xv = slm__bcast4_512(x[t * xs + b].q + 4 * k);
                    __m512i p = _mm512_maddubs_epi16(aw, _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv));
                    isum[t] = _mm512_add_epi32(isum[t], _mm512_madd_epi16(p, ones));
                }
            }
        } else {
            /* nibbles 0..15 are the unsigned side as they are; their offset of 8
               comes off once per block. The block's nibble x s8 pairs (each below
               2 * 15 * 127, eight of them below 2^15) add up in int16. */
            __m512i p16[2];
            SLM__UNROLL for (t = 0; t < nt; t++) p16[t] = _mm512_setzero_si512();
            for (k = 0; k < 4; k++) {
                __m512i wv = _mm512_loadu_si512((const void *)(q + k * line));
                __m512i lo = _mm512_and_si512(wv, low4), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    const int8_t *xq = x[t * xs + b].q;
                    p16[t] = _mm512_add_epi16(
                        p16[t], _mm512_add_epi16(_mm512_maddubs_epi16(lo, slm__bcast4_512(xq + 4 * k)),
                                                 _mm512_maddubs_epi16(hi, slm__bcast4_512(xq + SLM__QK / 2 + 4 * k))));
                }
            }
            SLM__UNROLL for (t = 0; t < nt; t++) isum[t] = _mm512_madd_epi16(p16[t], ones);
            SLM__UNROLL for (t = 0; t < nt; t++) isum[t] =
                _mm512_sub_epi32(isum[t], _mm512_set1_epi32(8 * xsum[t * xs + b]));
        }
        SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d))), acc[t]);
    }
    SLM__UNROLL for (t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

/* q5_0_R16, nt (1..4) a constant at each call: each line of nibbles gets its
   fifth bits from the block's qh line (row r's 32-bit mask in lane r: byte c
   of it copied to the lane's four bytes, then each byte tests its own bit),
   as unsigned 0..31; the offset of 16 comes off once per block. */
SLM__INLINE void slm__gemm_r16_q5_nt_avx512(const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum,
                                            size_t xs, const int nt, float *y, size_t ys) {
    const size_t line = 4 * SLM__R16, qbytes = 5 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m512i low4 = _mm512_set1_epi8(0x0f), sixteen = _mm512_set1_epi8(16);
    const __m512i spread = _mm512_broadcast_i32x4(_mm_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c));
    const __m512i bits_even = _mm512_set1_epi32(0x08040201), bits_odd = _mm512_set1_epi32((int)0x80402010u);
#if !defined(SLM__AVX512_VNNI)
    const __m512i ones = _mm512_set1_epi16(1);
#endif
    __m512 acc[4];
    int b, k, t;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)slm__r16_scales(group, b)));
        const __m512i qh = _mm512_loadu_si512((const void *)q);
        __m512i isum[4];
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
        for (k = 0; k < 4; k++) {
            /* elements 4k..4k+3 (low nibbles) have bits 4k.. of qh, in its byte k / 2; the high ones byte 2 + k / 2 */
            const __m512i bits = (k & 1) ? bits_odd : bits_even;
            __mmask64 hlo = _mm512_test_epi8_mask(
                _mm512_shuffle_epi8(qh, _mm512_add_epi8(spread, _mm512_set1_epi8((char)(k >> 1)))), bits);
            __mmask64 hhi = _mm512_test_epi8_mask(
                _mm512_shuffle_epi8(qh, _mm512_add_epi8(spread, _mm512_set1_epi8((char)(2 + (k >> 1))))), bits);
            __m512i wv = _mm512_loadu_si512((const void *)(q + (1 + k) * line));
            __m512i lo = _mm512_and_si512(wv, low4), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
            lo = _mm512_mask_add_epi8(lo, hlo, lo, sixteen);
            hi = _mm512_mask_add_epi8(hi, hhi, hi, sixteen);
            SLM__UNROLL for (t = 0; t < nt; t++) {
                const int8_t *xq = x[t * xs + b].q;
#if defined(SLM__AVX512_VNNI)
                isum[t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(isum[t], lo, slm__bcast4_512(xq + 4 * k)), hi,
                                              slm__bcast4_512(xq + SLM__QK / 2 + 4 * k));
#else
                /* a pair of 0..31 x s8 products stays below 2^13: two pairs fit int16 */
                isum[t] = _mm512_add_epi32(
                    isum[t], _mm512_madd_epi16(
                                 _mm512_add_epi16(_mm512_maddubs_epi16(lo, slm__bcast4_512(xq + 4 * k)),
                                                  _mm512_maddubs_epi16(hi, slm__bcast4_512(xq + SLM__QK / 2 + 4 * k))),
                                 ones));
#endif
            }
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            isum[t] = _mm512_sub_epi32(isum[t], _mm512_set1_epi32(16 * xsum[t * xs + b]));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]),
                                     _mm512_mul_ps(dw, _mm512_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d))), acc[t]);
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

#if defined(SLM__AVX512_VNNI)
/* Up to 8 tokens (SLM__R16_TILE) per pass over the group: nt is a constant
   at each call, and 8 tokens' integer and float sums take 16 of the 32
   registers, so each weight line is loaded, and made unsigned, once for
   eight tokens instead of two. vpdpbusd wants its first operand unsigned:
   q8_0's w + 128 (the sign bit flipped) is, as q4_0's nibbles are with
   their offset of 8; that offset times the block's sum of activations
   (xsum) is where each token's integer sum starts, so the correction costs
   no instruction of its own. The integer sums are exact and the float steps
   those of the kernels above: a token's result has the same bits whatever
   the tile it is in. */
SLM__INLINE void slm__gemm_r16_nt_avx512vnni(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                             const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    const int is_q8 = type == SLM_TYPE_Q8_0_R16, offset = is_q8 ? -128 : -8;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m512i low4 = _mm512_set1_epi8(0x0f), bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[8];
    int b, k, t;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)slm__r16_scales(group, b)));
        __m512i isum[8], isum2[8];
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        SLM__UNROLL for (t = 0; t < nt; t++) {
            isum[t] = _mm512_set1_epi32(offset * xsum[t * xs + b]);
            isum2[t] = _mm512_setzero_si512();
        }
        /* two chains of sums per token, so that eight tokens keep vpdpbusd
           busy through its latency; the line loops are not unrolled: g++ 12
           would then hoist all the tokens' broadcasts and spill them */
        if (is_q8) {
            for (k = 0; k < 8; k += 2) {
                __m512i uw = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + k * line)), bias);
                __m512i uw2 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(q + (k + 1) * line)), bias);
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    const int8_t *xq = x[t * xs + b].q;
                    isum[t] = _mm512_dpbusd_epi32(isum[t], uw, slm__bcast4_512(xq + 4 * k));
                    isum2[t] = _mm512_dpbusd_epi32(isum2[t], uw2, slm__bcast4_512(xq + 4 * k + 4));
                }
            }
        } else {
            for (k = 0; k < 4; k++) {
                __m512i wv = _mm512_loadu_si512((const void *)(q + k * line));
                __m512i lo = _mm512_and_si512(wv, low4), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    const int8_t *xq = x[t * xs + b].q;
                    isum[t] = _mm512_dpbusd_epi32(isum[t], lo, slm__bcast4_512(xq + 4 * k));
                    isum2[t] = _mm512_dpbusd_epi32(isum2[t], hi, slm__bcast4_512(xq + SLM__QK / 2 + 4 * k));
                }
            }
        }
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t] = _mm512_add_epi32(isum[t], isum2[t]);
        SLM__UNROLL for (t = 0; t < nt; t++) acc[t] = _mm512_fmadd_ps(
            _mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(dw, _mm512_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d))), acc[t]);
    }
    SLM__UNROLL for (t = 0; t < nt; t++) _mm512_storeu_ps(y + t * ys, acc[t]);
}

/* any number of tokens, eight per pass; the rest in one pass of its size (q5_0: four, as the other sets) */
static void slm__gemm_r16_avx512vnni(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                     const int32_t *xsum, size_t xs, int nt, float *y, size_t ys) {
    if (type == SLM_TYPE_Q5_0_R16) {
        SLM__GEMM_R16_Q5_PASSES(slm__gemm_r16_q5_nt_avx512);
        return;
    }
    for (; nt >= 8; nt -= 8, x += 8 * xs, xsum += 8 * xs, y += 8 * ys)
        slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 8, y, ys);
    switch (nt) {
    case 1: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 1, y, ys); break;
    case 2: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 2, y, ys); break;
    case 3: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 3, y, ys); break;
    case 4: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 4, y, ys); break;
    case 5: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 5, y, ys); break;
    case 6: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 6, y, ys); break;
    case 7: slm__gemm_r16_nt_avx512vnni(type, group, nb, x, xsum, xs, 7, y, ys); break;
    default: break;
    }
}
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX2) && defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
/* the 16 f16 scales of one block as two vectors of 8 rows */
SLM__INLINE void slm__r16_scales_f32(const uint8_t *sc, __m256 *lo, __m256 *hi) {
    *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sc));
    *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sc + 16)));
}

SLM__INLINE __m256i slm__bcast4_256(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* nt (1 or 2) is a constant at each call, so the token loops unroll into registers */
SLM__INLINE void slm__gemm_r16_nt_avx2(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                       const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    const int is_q8 = type == SLM_TYPE_Q8_0_R16;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256 acc[2][2];
    int b, k, t, h;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        __m256 dw[2];
        __m256i isum[2][2];
        slm__r16_scales_f32(slm__r16_scales(group, b), &dw[0], &dw[1]);
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        if (is_q8) {
            SLM__UNROLL for (t = 0; t < nt; t++) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
            for (k = 0; k < 8; k++) SLM__UNROLL for (h = 0; h < 2; h++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(q + k * line + 32 * h)), aw = _mm256_abs_epi8(wv);
                    SLM__UNROLL for (t = 0; t < nt; t++) {
                        /* |w| times x with w's sign: u8 x s8 pairs that fit in int16 */
                        __m256i p =
                            _mm256_maddubs_epi16(aw, _mm256_sign_epi8(slm__bcast4_256(x[t * xs + b].q + 4 * k), wv));
                        isum[t][h] = _mm256_add_epi32(isum[t][h], _mm256_madd_epi16(p, ones));
                    }
                }
        } else {
            /* nibble x s8 pairs stay below 2 * 15 * 127, and eight of them below 2^15:
               the block's products add up in int16 */
            __m256i p16[2][2];
            SLM__UNROLL for (t = 0; t < nt; t++) p16[t][0] = p16[t][1] = _mm256_setzero_si256();
            for (k = 0; k < 4; k++) SLM__UNROLL for (h = 0; h < 2; h++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(q + k * line + 32 * h));
                    __m256i lo = _mm256_and_si256(wv, low4), hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4);
                    SLM__UNROLL for (t = 0; t < nt; t++) {
                        const int8_t *xq = x[t * xs + b].q;
                        p16[t][h] = _mm256_add_epi16(
                            p16[t][h],
                            _mm256_add_epi16(_mm256_maddubs_epi16(lo, slm__bcast4_256(xq + 4 * k)),
                                             _mm256_maddubs_epi16(hi, slm__bcast4_256(xq + SLM__QK / 2 + 4 * k))));
                    }
                }
            SLM__UNROLL for (t = 0; t < nt; t++)
                SLM__UNROLL for (h = 0; h < 2; h++) /* the nibbles' offset of 8, once per block */
                isum[t][h] =
                    _mm256_sub_epi32(_mm256_madd_epi16(p16[t][h], ones), _mm256_set1_epi32(8 * xsum[t * xs + b]));
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            __m256 dx = _mm256_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d));
            SLM__UNROLL for (h = 0; h < 2; h++) acc[t][h] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][h]), _mm256_mul_ps(dw[h], dx), acc[t][h]);
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) {
        _mm256_storeu_ps(y + t * ys, acc[t][0]);
        _mm256_storeu_ps(y + t * ys + 8, acc[t][1]);
    }
}

/* q5_0_R16 (nt 1..4 a constant at each call), as the AVX-512 kernel: fifth
   bits from the qh line by a byte shuffle and a compare */
SLM__INLINE void slm__gemm_r16_q5_nt_avx2(const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum,
                                          size_t xs, const int nt, float *y, size_t ys) {
    const size_t line = 4 * SLM__R16, qbytes = 5 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m256i low4 = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi8(16), ones = _mm256_set1_epi16(1);
    const __m256i spread =
        _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c, 0, 0x04040404, 0x08080808, 0x0c0c0c0c);
    const __m256i bits_even = _mm256_set1_epi32(0x08040201), bits_odd = _mm256_set1_epi32((int)0x80402010u);
    __m256 acc[4][2];
    int b, k, t, h;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        __m256 dw[2];
        __m256i isum[4][2];
        slm__r16_scales_f32(slm__r16_scales(group, b), &dw[0], &dw[1]);
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
        for (h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(q + 32 * h));
            for (k = 0; k < 4; k++) {
                const __m256i bits = (k & 1) ? bits_odd : bits_even;
                __m256i hlo = _mm256_shuffle_epi8(qh, _mm256_add_epi8(spread, _mm256_set1_epi8((char)(k >> 1))));
                __m256i hhi = _mm256_shuffle_epi8(qh, _mm256_add_epi8(spread, _mm256_set1_epi8((char)(2 + (k >> 1)))));
                __m256i wv = _mm256_loadu_si256((const __m256i *)(q + (1 + k) * line + 32 * h));
                __m256i lo = _mm256_and_si256(wv, low4), hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4);
                lo = _mm256_or_si256(lo,
                                     _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hlo, bits), bits), sixteen));
                hi = _mm256_or_si256(hi,
                                     _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hhi, bits), bits), sixteen));
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    const int8_t *xq = x[t * xs + b].q;
                    /* a pair of 0..31 x s8 products stays below 2^13: two pairs fit int16 */
                    isum[t][h] = _mm256_add_epi32(
                        isum[t][h],
                        _mm256_madd_epi16(
                            _mm256_add_epi16(_mm256_maddubs_epi16(lo, slm__bcast4_256(xq + 4 * k)),
                                             _mm256_maddubs_epi16(hi, slm__bcast4_256(xq + SLM__QK / 2 + 4 * k))),
                            ones));
                }
            }
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            __m256 dx = _mm256_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d));
            SLM__UNROLL for (h = 0; h < 2; h++) acc[t][h] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[t][h], _mm256_set1_epi32(16 * xsum[t * xs + b]))),
                _mm256_mul_ps(dw[h], dx), acc[t][h]);
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) {
        _mm256_storeu_ps(y + t * ys, acc[t][0]);
        _mm256_storeu_ps(y + t * ys + 8, acc[t][1]);
    }
}

#if defined(SLM__AVXVNNI)
/* The AVX2 kernel with AVX-VNNI's vpdpbusd, one instruction per token where
   AVX2 takes three or four, as slm__gemm_r16_nt_avx512vnni: the same
   integer sums (exact), then the float steps of the AVX2 kernel, so the
   two give the same bits. */
SLM__INLINE void slm__gemm_r16_nt_avxvnni(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                          const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    const int is_q8 = type == SLM_TYPE_Q8_0_R16;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const __m256i low4 = _mm256_set1_epi8(0x0f), bias = _mm256_set1_epi8((char)0x80);
    __m256 acc[2][2];
    int b, k, t, h;
    SLM__UNROLL for (t = 0; t < nt; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (b = 0; b < nb; b++, q += qbytes) {
        __m256 dw[2];
        __m256i isum[2][2];
        slm__r16_scales_f32(slm__r16_scales(group, b), &dw[0], &dw[1]);
        SLM__PREFETCH_GROUP(q, qbytes, nt);
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
        if (is_q8) {
            /* vpdpbusd wants one side unsigned: w + 128 (the sign bit flipped) is,
               and the extra 128 x (the sum of the block's activations) comes off after */
            for (k = 0; k < 8; k++) SLM__UNROLL for (h = 0; h < 2; h++) {
                    __m256i uw = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(q + k * line + 32 * h)), bias);
                    SLM__UNROLL for (t = 0; t < nt; t++) isum[t][h] =
                        _mm256_dpbusd_avx_epi32(isum[t][h], uw, slm__bcast4_256(x[t * xs + b].q + 4 * k));
                }
            SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 2; h++) isum[t][h] =
                _mm256_sub_epi32(isum[t][h], _mm256_set1_epi32(128 * xsum[t * xs + b]));
        } else {
            /* nibbles 0..15 are the unsigned side as they are; their offset of 8 comes off once per block */
            for (k = 0; k < 4; k++) SLM__UNROLL for (h = 0; h < 2; h++) {
                    __m256i wv = _mm256_loadu_si256((const __m256i *)(q + k * line + 32 * h));
                    __m256i lo = _mm256_and_si256(wv, low4), hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4);
                    SLM__UNROLL for (t = 0; t < nt; t++) {
                        const int8_t *xq = x[t * xs + b].q;
                        isum[t][h] = _mm256_dpbusd_avx_epi32(
                            _mm256_dpbusd_avx_epi32(isum[t][h], lo, slm__bcast4_256(xq + 4 * k)), hi,
                            slm__bcast4_256(xq + SLM__QK / 2 + 4 * k));
                    }
                }
            SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 2; h++) isum[t][h] =
                _mm256_sub_epi32(isum[t][h], _mm256_set1_epi32(8 * xsum[t * xs + b]));
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            __m256 dx = _mm256_set1_ps(slm_fp16_to_fp32(x[t * xs + b].d));
            SLM__UNROLL for (h = 0; h < 2; h++) acc[t][h] =
                _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][h]), _mm256_mul_ps(dw[h], dx), acc[t][h]);
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) {
        _mm256_storeu_ps(y + t * ys, acc[t][0]);
        _mm256_storeu_ps(y + t * ys + 8, acc[t][1]);
    }
}
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__NEON)
SLM__MAYBE_UNUSED static void slm__axpy_f32_neon(float *out, float a, const float *v, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vfmaq_n_f32(vld1q_f32(out + i), vld1q_f32(v + i), a));
    for (; i < n; i++) out[i] += a * v[i];
}
SLM__MAYBE_UNUSED static void slm__axpy_f16_neon(float *out, float a, const uint16_t *v, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(out + i, vfmaq_n_f32(vld1q_f32(out + i), vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(v + i))), a));
    for (; i < n; i++) out[i] += a * slm_fp16_to_fp32(v[i]);
}

/* lane j gets bytes 4j..4j+3, as sdot does (slm__dot_s8x16 only keeps the total right) */
SLM__INLINE int32x4_t slm__dot4_s8x16(int32x4_t acc, int8x16_t a, int8x16_t b) {
    int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b)), hi = vmull_high_s8(a, b);
    return vpadalq_s16(acc, vpaddq_s16(lo, hi)); /* pairs of products: |sum| <= 2 * 128 * 127 */
}
/* acc + 4-byte dot products of w's four rows with lane `lane` of x, broadcast
   (a macro: the lane is an immediate) */
#define SLM__DOT_LANE(acc, w, x, lane, dotprod)          \
    ((dotprod) ? SLM__SDOT_LANE((acc), (w), (x), (lane)) \
               : slm__dot4_s8x16((acc), (w), vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), (lane)))))

/* nt (1 or 2) is a constant at each call, so the token loops unroll into registers */
SLM__INLINE void slm__gemm_r16_nt_neon_any(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                           const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys,
                                           const int dotprod) {
    const int is_q8 = type == SLM_TYPE_Q8_0_R16;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    float32x4_t acc[2][4];
    int b, t, h;
    SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 4; h++) acc[t][h] = vdupq_n_f32(0.0f);
    for (b = 0; b < nb; b++, q += qbytes) {
        const uint16_t *sc = (const uint16_t *)slm__r16_scales(group, b);
        int32x4_t isum[2][4];
        int8x16_t xlo[2], xhi[2];
        __builtin_prefetch(q + SLM__PREFETCH);
        __builtin_prefetch(q + SLM__PREFETCH + 128);
        if (is_q8) {
            __builtin_prefetch(q + SLM__PREFETCH + 256);
            __builtin_prefetch(q + SLM__PREFETCH + 384);
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            xlo[t] = vld1q_s8(x[t * xs + b].q);
            xhi[t] = vld1q_s8(x[t * xs + b].q + 16);
            SLM__UNROLL for (h = 0; h < 4; h++) isum[t][h] = vdupq_n_s32(0);
        }
        if (is_q8) {
#define SLM__R16_Q8_LINE(k, xv, lane)                                                                          \
    SLM__UNROLL for (h = 0; h < 4; h++) {                                                                      \
        int8x16_t wv = vld1q_s8((const int8_t *)q + (k)*line + 16 * h);                                        \
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t][h] = SLM__DOT_LANE(isum[t][h], wv, xv[t], lane, dotprod); \
    }
            SLM__R16_Q8_LINE(0, xlo, 0);
            SLM__R16_Q8_LINE(1, xlo, 1);
            SLM__R16_Q8_LINE(2, xlo, 2);
            SLM__R16_Q8_LINE(3, xlo, 3);
            SLM__R16_Q8_LINE(4, xhi, 0);
            SLM__R16_Q8_LINE(5, xhi, 1);
            SLM__R16_Q8_LINE(6, xhi, 2);
            SLM__R16_Q8_LINE(7, xhi, 3);
#undef SLM__R16_Q8_LINE
        } else {
            /* nibbles 0..15 as they are; the offset of 8 comes off once per block */
#define SLM__R16_Q4_LINE(k)                                                                           \
    SLM__UNROLL for (h = 0; h < 4; h++) {                                                             \
        uint8x16_t wv = vld1q_u8(q + (k)*line + 16 * h);                                              \
        int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(wv, vdupq_n_u8(0x0f)));                           \
        int8x16_t hi = vreinterpretq_s8_u8(vshrq_n_u8(wv, 4));                                        \
        SLM__UNROLL for (t = 0; t < nt; t++) isum[t][h] =                                             \
            SLM__DOT_LANE(SLM__DOT_LANE(isum[t][h], lo, xlo[t], k, dotprod), hi, xhi[t], k, dotprod); \
    }
            SLM__R16_Q4_LINE(0);
            SLM__R16_Q4_LINE(1);
            SLM__R16_Q4_LINE(2);
            SLM__R16_Q4_LINE(3);
#undef SLM__R16_Q4_LINE
            SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 4; h++) isum[t][h] =
                vsubq_s32(isum[t][h], vdupq_n_s32(8 * xsum[t * xs + b]));
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            float dx = slm_fp16_to_fp32(x[t * xs + b].d);
            SLM__UNROLL for (h = 0; h < 4; h++) {
                float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sc + 4 * h)));
                acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(isum[t][h]), vmulq_n_f32(dw, dx));
            }
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 4; h++) vst1q_f32(y + t * ys + 4 * h, acc[t][h]);
}

/* q5_0_R16 (nt 1..4 a constant at each call): fifth bits from the qh line by a
   table lookup (byte c of each row's mask to the row's four bytes) and a bit test */
SLM__INLINE void slm__gemm_r16_q5_nt_neon_any(const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                              const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys,
                                              const int dotprod) {
    static const uint8_t spread_bytes[16] = { 0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12 };
    const size_t line = 4 * SLM__R16, qbytes = 5 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const uint8x16_t spread = vld1q_u8(spread_bytes), low4 = vdupq_n_u8(0x0f), sixteen = vdupq_n_u8(16);
    float32x4_t acc[4][4];
    int b, t, h, k;
    SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 4; h++) acc[t][h] = vdupq_n_f32(0.0f);
    for (b = 0; b < nb; b++, q += qbytes) {
        const uint16_t *sc = (const uint16_t *)slm__r16_scales(group, b);
        int32x4_t isum[4][4];
        int8x16_t xlo[4], xhi[4];
        __builtin_prefetch(q + SLM__PREFETCH);
        __builtin_prefetch(q + SLM__PREFETCH + 128);
        __builtin_prefetch(q + SLM__PREFETCH + 256);
        SLM__UNROLL for (t = 0; t < nt; t++) {
            xlo[t] = vld1q_s8(x[t * xs + b].q);
            xhi[t] = vld1q_s8(x[t * xs + b].q + 16);
            SLM__UNROLL for (h = 0; h < 4; h++) isum[t][h] = vdupq_n_s32(0);
        }
        SLM__UNROLL for (h = 0; h < 4; h++) {
            const uint8x16_t qh = vld1q_u8(q + 16 * h);
            SLM__UNROLL for (k = 0; k < 4; k++) {
                /* elements 4k.. (low nibbles): bits 4k.. of qh, in its byte k / 2; the high ones byte 2 + k / 2 */
                const uint8x16_t bits = vreinterpretq_u8_u32(vdupq_n_u32(k & 1 ? 0x80402010u : 0x08040201u));
                uint8x16_t wv = vld1q_u8(q + (1 + k) * line + 16 * h);
                uint8x16_t hlo = vtstq_u8(vqtbl1q_u8(qh, vaddq_u8(spread, vdupq_n_u8((uint8_t)(k >> 1)))), bits);
                uint8x16_t hhi = vtstq_u8(vqtbl1q_u8(qh, vaddq_u8(spread, vdupq_n_u8((uint8_t)(2 + (k >> 1))))), bits);
                int8x16_t lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(wv, low4), vandq_u8(hlo, sixteen)));
                int8x16_t hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(wv, 4), vandq_u8(hhi, sixteen)));
                SLM__UNROLL for (t = 0; t < nt; t++) {
                    switch (k) { /* the lane of a dot product is an immediate */
#define SLM__Q5_LANE(lane) \
    isum[t][h] = SLM__DOT_LANE(SLM__DOT_LANE(isum[t][h], lo, xlo[t], lane, dotprod), hi, xhi[t], lane, dotprod)
                    case 0: SLM__Q5_LANE(0); break;
                    case 1: SLM__Q5_LANE(1); break;
                    case 2: SLM__Q5_LANE(2); break;
                    default: SLM__Q5_LANE(3); break;
#undef SLM__Q5_LANE
                    }
                }
            }
        }
        SLM__UNROLL for (t = 0; t < nt; t++) {
            float dx = slm_fp16_to_fp32(x[t * xs + b].d);
            SLM__UNROLL for (h = 0; h < 4; h++) {
                float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sc + 4 * h)));
                acc[t][h] =
                    vfmaq_f32(acc[t][h], vcvtq_f32_s32(vsubq_s32(isum[t][h], vdupq_n_s32(16 * xsum[t * xs + b]))),
                              vmulq_n_f32(dw, dx));
            }
        }
    }
    SLM__UNROLL for (t = 0; t < nt; t++) SLM__UNROLL for (h = 0; h < 4; h++) vst1q_f32(y + t * ys + 4 * h, acc[t][h]);
}
#undef SLM__DOT_LANE
SLM__INLINE void slm__gemm_r16_nt_neon(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                       const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    slm__gemm_r16_nt_neon_any(type, group, nb, x, xsum, xs, nt, y, ys, 0);
}
SLM__INLINE void slm__gemm_r16_q5_nt_neon(const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum,
                                          size_t xs, const int nt, float *y, size_t ys) {
    slm__gemm_r16_q5_nt_neon_any(group, nb, x, xsum, xs, nt, y, ys, 0);
}
#if defined(SLM__NEON_DOTPROD)
SLM__TARGET_DOTPROD_BEGIN
SLM__INLINE void slm__gemm_r16_nt_dotprod(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                          const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    slm__gemm_r16_nt_neon_any(type, group, nb, x, xsum, xs, nt, y, ys, 1);
}
SLM__INLINE void slm__gemm_r16_q5_nt_dotprod(const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                             const int32_t *xsum, size_t xs, const int nt, float *y, size_t ys) {
    slm__gemm_r16_q5_nt_neon_any(group, nb, x, xsum, xs, nt, y, ys, 1);
}
SLM__TARGET_END
#endif

#if defined(SLM__NEON_I8MM)
/* smmla multiplies two 2x8 int8 matrices into a 2x2 int32 tile: here two
   rows' 8 weights against two tokens' same 8 activations, twice the products
   of a dot-product instruction. The _R16 lines hold 4 bytes per row; lines
   2c and 2c + 1 zipped by 32-bit elements give rows 0, 1 (zip1) and 2, 3
   (zip2) of a 16-byte vector as 8-byte runs: q8_0's elements 8c..8c+7;
   q4_0's and q5_0's bytes 8c..8c+7, whose nibbles are elements 8c.. and
   16 + 8c.. (q5_0: their fifth bits are bytes c and 2 + c of the row's qh,
   spread over the run by a table lookup and a bit test). Zipping at run
   time keeps the file's layout, and each zip serves every token of the
   pass; the tokens' 8-byte runs are two zips of each pair's blocks. A
   tile's lanes are (row r, token t): r0t0 r0t1 r1t0 r1t1. The integer sums
   are exact and each lane's float steps are those of the NEON kernels
   (float(sum - offset) times dw * dx, fused into the sum of blocks), so a
   token has the same bits in a pair as alone in slm__gemm_r16_nt_neon or
   slm__gemm_r16_q5_nt_neon. np (1 or 2 token pairs) is a constant at each
   call. */
SLM__INLINE void slm__gemm_r16_nt_i8mm(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x,
                                       const int32_t *xsum, size_t xs, const int np, float *y, size_t ys) {
    /* byte i of a row's run: bit i of its qh byte, taken from byte 4r + c of the qh vector (rows r, r + 1) */
    static const uint8_t run_bits[16] = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    static const uint8_t run_rows[2][16] = { { 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4 },
                                             { 8, 8, 8, 8, 8, 8, 8, 8, 12, 12, 12, 12, 12, 12, 12, 12 } };
    const int is_q8 = type == SLM_TYPE_Q8_0_R16, is_q5 = type == SLM_TYPE_Q5_0_R16;
    const size_t line = 4 * SLM__R16, qbytes = is_q8 ? 8 * line : is_q5 ? 5 * line : 4 * line;
    const uint8_t *q = group + (size_t)nb * SLM__R16 * 2;
    const uint8x16_t low4 = vdupq_n_u8(0x0f), sixteen = vdupq_n_u8(16), bits = vld1q_u8(run_bits);
    const int32_t nibble_offset = is_q8 ? 0 : is_q5 ? -16 : -8;
    float32x4_t acc[2][8]; /* [token pair][row pair] */
    int b, p, h, j, c;
    SLM__UNROLL for (p = 0; p < np; p++) SLM__UNROLL for (j = 0; j < 8; j++) acc[p][j] = vdupq_n_f32(0.0f);
    for (b = 0; b < nb; b++, q += qbytes) {
        const uint16_t *sc = (const uint16_t *)slm__r16_scales(group, b);
        int8x16_t xk[2][4];  /* [token pair][run c]: elements 8c..8c+7 of both tokens */
        float32x4_t dx[2];   /* the tokens' scales in a tile's lanes */
        int32x4_t offset[2]; /* q4_0, q5_0: -8 or -16 times each token's sum of quants, in a tile's lanes */
        __builtin_prefetch(q + SLM__PREFETCH);
        __builtin_prefetch(q + SLM__PREFETCH + 128);
        if (is_q5) __builtin_prefetch(q + SLM__PREFETCH + 256);
        if (is_q8) {
            __builtin_prefetch(q + SLM__PREFETCH + 256);
            __builtin_prefetch(q + SLM__PREFETCH + 384);
        }
        SLM__UNROLL for (p = 0; p < np; p++) {
            const slm__block_q8_0 *x0 = x + (size_t)(2 * p) * xs + b, *x1 = x + (size_t)(2 * p + 1) * xs + b;
            int64x2_t lo0 = vreinterpretq_s64_s8(vld1q_s8(x0->q)), hi0 = vreinterpretq_s64_s8(vld1q_s8(x0->q + 16));
            int64x2_t lo1 = vreinterpretq_s64_s8(vld1q_s8(x1->q)), hi1 = vreinterpretq_s64_s8(vld1q_s8(x1->q + 16));
            float d0 = slm_fp16_to_fp32(x0->d), d1 = slm_fp16_to_fp32(x1->d);
            int32_t o0 = nibble_offset * xsum[(size_t)(2 * p) * xs + b];
            int32_t o1 = nibble_offset * xsum[(size_t)(2 * p + 1) * xs + b];
            xk[p][0] = vreinterpretq_s8_s64(vzip1q_s64(lo0, lo1));
            xk[p][1] = vreinterpretq_s8_s64(vzip2q_s64(lo0, lo1));
            xk[p][2] = vreinterpretq_s8_s64(vzip1q_s64(hi0, hi1));
            xk[p][3] = vreinterpretq_s8_s64(vzip2q_s64(hi0, hi1));
            dx[p] = vzip1q_f32(vdupq_n_f32(d0), vdupq_n_f32(d1));
            offset[p] = vzip1q_s32(vdupq_n_s32(o0), vdupq_n_s32(o1));
        }
        /* rows 4h..4h+3: row pairs 2h, 2h + 1; unrolled: as a loop it indexes
           the sums, and g++ 12 kept them all in memory (unrolled, two token
           pairs still spill some: 32 registers are just short) */
        SLM__UNROLL for (h = 0; h < 4; h++) {
            int8x16_t wk[2][4]; /* [row pair][run c] */
            float32x4_t dw = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(sc + 4 * h))), dwp[2];
            dwp[0] = vzip1q_f32(dw, dw);
            dwp[1] = vzip2q_f32(dw, dw);
            if (is_q8) {
                SLM__UNROLL for (c = 0; c < 4; c++) {
                    int32x4_t l0 = vld1q_s32((const int32_t *)(q + (size_t)(2 * c) * line + 16 * h));
                    int32x4_t l1 = vld1q_s32((const int32_t *)(q + (size_t)(2 * c + 1) * line + 16 * h));
                    wk[0][c] = vreinterpretq_s8_s32(vzip1q_s32(l0, l1));
                    wk[1][c] = vreinterpretq_s8_s32(vzip2q_s32(l0, l1));
                }
            } else { /* nibbles 0..15 (q5_0: 0..31) as they are; the offset comes off once per block */
                const uint8_t *nibbles = is_q5 ? q + line : q;
                SLM__UNROLL for (c = 0; c < 2; c++) {
                    int32x4_t l0 = vld1q_s32((const int32_t *)(nibbles + (size_t)(2 * c) * line + 16 * h));
                    int32x4_t l1 = vld1q_s32((const int32_t *)(nibbles + (size_t)(2 * c + 1) * line + 16 * h));
                    uint8x16_t z[2];
                    z[0] = vreinterpretq_u8_s32(vzip1q_s32(l0, l1));
                    z[1] = vreinterpretq_u8_s32(vzip2q_s32(l0, l1));
                    SLM__UNROLL for (j = 0; j < 2; j++) {
                        uint8x16_t lo = vandq_u8(z[j], low4), hi = vshrq_n_u8(z[j], 4);
                        if (is_q5) {
                            const uint8x16_t qh = vld1q_u8(q + 16 * h), rows = vld1q_u8(run_rows[j]);
                            uint8x16_t hlo = vtstq_u8(vqtbl1q_u8(qh, vaddq_u8(rows, vdupq_n_u8((uint8_t)c))), bits);
                            uint8x16_t hhi =
                                vtstq_u8(vqtbl1q_u8(qh, vaddq_u8(rows, vdupq_n_u8((uint8_t)(2 + c)))), bits);
                            lo = vorrq_u8(lo, vandq_u8(hlo, sixteen));
                            hi = vorrq_u8(hi, vandq_u8(hhi, sixteen));
                        }
                        wk[j][c] = vreinterpretq_s8_u8(lo);
                        wk[j][c + 2] = vreinterpretq_s8_u8(hi);
                    }
                }
            }
            SLM__UNROLL for (p = 0; p < np; p++) SLM__UNROLL for (j = 0; j < 2; j++) {
                int32x4_t isum = vmmlaq_s32(offset[p], wk[j][0], xk[p][0]); /* the offset: no instruction of its own */
                isum = vmmlaq_s32(isum, wk[j][1], xk[p][1]);
                isum = vmmlaq_s32(isum, wk[j][2], xk[p][2]);
                isum = vmmlaq_s32(isum, wk[j][3], xk[p][3]);
                acc[p][2 * h + j] = vfmaq_f32(acc[p][2 * h + j], vcvtq_f32_s32(isum), vmulq_f32(dwp[j], dx[p]));
            }
        }
    }
    SLM__UNROLL for (p = 0; p < np; p++) SLM__UNROLL for (h = 0; h < 4; h++) {
        vst1q_f32(y + (size_t)(2 * p) * ys + 4 * h, vuzp1q_f32(acc[p][2 * h], acc[p][2 * h + 1]));
        vst1q_f32(y + (size_t)(2 * p + 1) * ys + 4 * h, vuzp2q_f32(acc[p][2 * h], acc[p][2 * h + 1]));
    }
}

/* any number of tokens: four per pass, then a pair; a last single token
   (decode) runs slm__gemm_r16_nt (sdot or not), whose bits a pair's are */
static void slm__gemm_r16_i8mm(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum,
                               size_t xs, int nt, float *y, size_t ys) {
    for (; nt >= 4; nt -= 4, x += 4 * xs, xsum += 4 * xs, y += 4 * ys)
        slm__gemm_r16_nt_i8mm(type, group, nb, x, xsum, xs, 2, y, ys);
    if (nt >= 2) {
        slm__gemm_r16_nt_i8mm(type, group, nb, x, xsum, xs, 1, y, ys);
        nt -= 2, x += 2 * xs, xsum += 2 * xs, y += 2 * ys;
    }
    if (nt && type == SLM_TYPE_Q5_0_R16)
        slm__gemm_r16_q5_nt(group, nb, x, xsum, xs, 1, y, ys);
    else if (nt)
        slm__gemm_r16_nt(type, group, nb, x, xsum, xs, 1, y, ys);
}
#endif

#endif

/* two tokens per pass over the group (q5_0_r16: four, its weights cost more
   to unpack): what the registers hold */
#define SLM__GEMM_R16_PAIRS(name, gemm_nt, gemm_q5_nt)                                                                 \
    static void name(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, \
                     int nt, float *y, size_t ys) {                                                                    \
        if (type == SLM_TYPE_Q5_0_R16) {                                                                               \
            SLM__GEMM_R16_Q5_PASSES(gemm_q5_nt);                                                                       \
            return;                                                                                                    \
        }                                                                                                              \
        for (; nt >= 2; nt -= 2, x += 2 * xs, xsum += 2 * xs, y += 2 * ys)                                             \
            gemm_nt(type, group, nb, x, xsum, xs, 2, y, ys);                                                           \
        if (nt) gemm_nt(type, group, nb, x, xsum, xs, 1, y, ys);                                                       \
    }
#if defined(slm__gemm_r16_nt) && !defined(SLM__DISPATCH) && !defined(SLM__NEON_I8MM)
SLM__GEMM_R16_PAIRS(slm__gemm_r16_pairs, slm__gemm_r16_nt, slm__gemm_r16_q5_nt)
#endif

/* Attention for the query heads that share one KV head: each key row is
   read and converted once for up to SLM__GROUP heads (q at q + i * stride),
   and each head's output sums the value rows with its accumulators held in
   registers. Every head's arithmetic is that of slm__dot_* and of one
   slm__axpy_* per position, bit for bit, so neither changes a result. */
#define SLM__GROUP 8
/* any instruction set: one head at a time over the row kernels (macros
   because an SLM_DISPATCH build makes one for each kernel set) */
#define SLM__DOT_GROUP_GENERIC(name, K, dot)                                                                   \
    SLM__MAYBE_UNUSED static void name(const K *k, const float *q, size_t stride, int nq, int n, float *out) { \
        int i;                                                                                                 \
        for (i = 0; i < nq; i++) out[i] = dot(k, q + i * stride, n);                                           \
    }
/* out[h] = sum over positions p of att[h][p] * v[p], one axpy per position.
   With accumulate the sum goes on from the values already in out: calls over
   consecutive runs of positions then make the same chain of roundings as one
   call over them all (a branch token's prefix, then its ancestors' slots). */
#define SLM__ATTN_VALUES_GENERIC(name, V, axpy)                                                                        \
    SLM__MAYBE_UNUSED static void name(float *out, size_t out_stride, const float *att, size_t att_stride, const V *v, \
                                       size_t v_stride, int n_pos, int nq, int n, int accumulate) {                    \
        int h, p;                                                                                                      \
        for (h = 0; h < nq; h++) {                                                                                     \
            if (!accumulate) memset(out + h * out_stride, 0, (size_t)n * sizeof(float));                               \
            for (p = 0; p < n_pos; p++) axpy(out + h * out_stride, att[h * att_stride + p], v + p * v_stride, n);      \
        }                                                                                                              \
    }
#if !defined(SLM__DISPATCH)
SLM__DOT_GROUP_GENERIC(slm__dot_f16_group_generic, uint16_t, slm__dot_f16)
SLM__DOT_GROUP_GENERIC(slm__dot_f32_group_generic, float, slm__dot_f32)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f16_generic, uint16_t, slm__axpy_f16)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f32_generic, float, slm__axpy_f32)
#endif

#if defined(SLM__AVX2) && defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
/* nq is a constant at each call below, so the accumulators stay in registers */
SLM__INLINE void slm__dot_group_nq(const uint16_t *k16, const float *k32, const float *q, size_t stride, const int nq,
                                   int n, float *out) {
    __m256 acc[SLM__GROUP];
    int i, j = 0;
    SLM__UNROLL for (i = 0; i < nq; i++) acc[i] = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) {
        __m256 kv = k16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k16 + j))) : _mm256_loadu_ps(k32 + j);
        SLM__UNROLL for (i = 0; i < nq; i++) acc[i] = _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + i * stride + j), acc[i]);
    }
    for (i = 0; i < nq; i++) { /* the tails written as in slm__dot_f16 / slm__dot_f32, for the same rounding */
        const float *x = q + i * stride;
        float sum = slm__hsum256(acc[i]);
        int jj;
        if (k16)
            for (jj = j; jj < n; jj++) sum += slm_fp16_to_fp32(k16[jj]) * x[jj];
        else
            for (jj = j; jj < n; jj++) sum += k32[jj] * x[jj];
        out[i] = sum;
    }
}
static void slm__dot_group(const uint16_t *k16, const float *k32, const float *q, size_t stride, int nq, int n,
                           float *out) {
    switch (nq) {
    case 1: slm__dot_group_nq(k16, k32, q, stride, 1, n, out); break;
    case 2: slm__dot_group_nq(k16, k32, q, stride, 2, n, out); break;
    case 3: slm__dot_group_nq(k16, k32, q, stride, 3, n, out); break;
    case 4: slm__dot_group_nq(k16, k32, q, stride, 4, n, out); break;
    case 5: slm__dot_group_nq(k16, k32, q, stride, 5, n, out); break;
    case 6: slm__dot_group_nq(k16, k32, q, stride, 6, n, out); break;
    case 7: slm__dot_group_nq(k16, k32, q, stride, 7, n, out); break;
    default: slm__dot_group_nq(k16, k32, q, stride, 8, n, out); break;
    }
}
SLM__MAYBE_UNUSED static void slm__dot_f16_group_avx2(const uint16_t *k, const float *q, size_t stride, int nq, int n,
                                                      float *out) {
    slm__dot_group(k, NULL, q, stride, nq, n, out);
}
SLM__MAYBE_UNUSED static void slm__dot_f32_group_avx2(const float *k, const float *q, size_t stride, int nq, int n,
                                                      float *out) {
    slm__dot_group(NULL, k, q, stride, nq, n, out);
}
/* 32 columns of the outputs of two heads in eight registers over all
   positions, each value vector loaded (converted) once for both; then the
   tail columns head by head: the same fused multiply-adds, in the same
   order, as slm__axpy_* per position (from zero, or from out's values with
   accumulate) */
#define SLM__ATTN_VALUES(NAME, T, LOAD8, SCALAR)                                                                       \
    SLM__INLINE void NAME##_32(float *out, size_t out_stride, const float *att, size_t att_stride, const T *v,         \
                               size_t v_stride, int n_pos, const int nh, int j, int accumulate) {                      \
        __m256 acc[2][4];                                                                                              \
        int h, p, i;                                                                                                   \
        SLM__UNROLL for (h = 0; h < nh; h++) SLM__UNROLL for (i = 0; i < 4; i++) acc[h][i] =                           \
            accumulate ? _mm256_loadu_ps(out + h * out_stride + j + 8 * i) : _mm256_setzero_ps();                      \
        for (p = 0; p < n_pos; p++) {                                                                                  \
            const T *vp = v + p * v_stride + j;                                                                        \
            __m256 vv[4];                                                                                              \
            SLM__UNROLL for (i = 0; i < 4; i++) vv[i] = LOAD8(vp + 8 * i);                                             \
            SLM__UNROLL for (h = 0; h < nh; h++) {                                                                     \
                __m256 ap = _mm256_set1_ps(att[h * att_stride + p]);                                                   \
                SLM__UNROLL for (i = 0; i < 4; i++) acc[h][i] = _mm256_fmadd_ps(ap, vv[i], acc[h][i]);                 \
            }                                                                                                          \
        }                                                                                                              \
        SLM__UNROLL for (h = 0; h < nh; h++) SLM__UNROLL for (i = 0; i < 4; i++)                                       \
            _mm256_storeu_ps(out + h * out_stride + j + 8 * i, acc[h][i]);                                             \
    }                                                                                                                  \
    SLM__MAYBE_UNUSED static void NAME(float *out, size_t out_stride, const float *att, size_t att_stride, const T *v, \
                                       size_t v_stride, int n_pos, int nq, int n, int accumulate) {                    \
        int h, j, p, h0;                                                                                               \
        for (j = 0; j + 32 <= n; j += 32)                                                                              \
            for (h0 = 0; h0 < nq; h0 += 2) {                                                                           \
                if (nq - h0 >= 2)                                                                                      \
                    NAME##_32(out + h0 * out_stride, out_stride, att + h0 * att_stride, att_stride, v, v_stride,       \
                              n_pos, 2, j, accumulate);                                                                \
                else                                                                                                   \
                    NAME##_32(out + h0 * out_stride, out_stride, att + h0 * att_stride, att_stride, v, v_stride,       \
                              n_pos, 1, j, accumulate);                                                                \
            }                                                                                                          \
        for (h = 0; h < nq; h++) {                                                                                     \
            const float *a = att + h * att_stride;                                                                     \
            float *o = out + h * out_stride;                                                                           \
            for (j = n / 32 * 32; j + 8 <= n; j += 8) {                                                                \
                __m256 acc = accumulate ? _mm256_loadu_ps(o + j) : _mm256_setzero_ps();                                \
                for (p = 0; p < n_pos; p++)                                                                            \
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(a[p]), LOAD8(v + p * v_stride + j), acc);                     \
                _mm256_storeu_ps(o + j, acc);                                                                          \
            }                                                                                                          \
            for (; j < n; j++) {                                                                                       \
                float sum = accumulate ? o[j] : 0.0f;                                                                  \
                for (p = 0; p < n_pos; p++) sum = fmaf(a[p], SCALAR(v[p * v_stride + j]), sum);                        \
                o[j] = sum;                                                                                            \
            }                                                                                                          \
        }                                                                                                              \
    }
#define SLM__LOAD8_F16(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define SLM__LOAD8_F32(p) _mm256_loadu_ps(p)
#define SLM__AS_FLOAT(x)  (x)
SLM__ATTN_VALUES(slm__attn_values_f16_avx2, uint16_t, SLM__LOAD8_F16, slm_fp16_to_fp32)
SLM__ATTN_VALUES(slm__attn_values_f32_avx2, float, SLM__LOAD8_F32, SLM__AS_FLOAT)
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
#if defined(__GNUC__) && !defined(__clang__)
/* g++ 12's false positive in its own AVX-512 headers, as above */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
/* The grouped kernels of AVX-512 builds, whose one-head kernels are
   slm__dot_f16_avx512 / slm__dot_f32_avx512: each head's sum runs in 16
   lanes, its tail masked, and ends in the same reduction, as there (the
   AVX2 group kernels round as the AVX2 row kernels, not these). */
SLM__INLINE void slm__dot_group_nq_avx512(const uint16_t *k16, const float *k32, const float *q, size_t stride,
                                          const int nq, int n, float *out) {
    __m512 acc[SLM__GROUP];
    int i, j = 0;
    SLM__UNROLL for (i = 0; i < nq; i++) acc[i] = _mm512_setzero_ps();
    for (; j + 16 <= n; j += 16) {
        __m512 kv = k16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(k16 + j))) : _mm512_loadu_ps(k32 + j);
        SLM__UNROLL for (i = 0; i < nq; i++) acc[i] = _mm512_fmadd_ps(kv, _mm512_loadu_ps(q + i * stride + j), acc[i]);
    }
    if (j < n) {
        __mmask16 m = (__mmask16)((1u << (n - j)) - 1);
        __m512 kv = k16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, k16 + j)) : _mm512_maskz_loadu_ps(m, k32 + j);
        SLM__UNROLL for (i = 0; i < nq; i++) acc[i] =
            _mm512_fmadd_ps(kv, _mm512_maskz_loadu_ps(m, q + i * stride + j), acc[i]);
    }
    SLM__UNROLL for (i = 0; i < nq; i++) out[i] = slm__hsum512(acc[i]);
}
static void slm__dot_group_avx512(const uint16_t *k16, const float *k32, const float *q, size_t stride, int nq, int n,
                                  float *out) {
    switch (nq) {
    case 1: slm__dot_group_nq_avx512(k16, k32, q, stride, 1, n, out); break;
    case 2: slm__dot_group_nq_avx512(k16, k32, q, stride, 2, n, out); break;
    case 3: slm__dot_group_nq_avx512(k16, k32, q, stride, 3, n, out); break;
    case 4: slm__dot_group_nq_avx512(k16, k32, q, stride, 4, n, out); break;
    case 5: slm__dot_group_nq_avx512(k16, k32, q, stride, 5, n, out); break;
    case 6: slm__dot_group_nq_avx512(k16, k32, q, stride, 6, n, out); break;
    case 7: slm__dot_group_nq_avx512(k16, k32, q, stride, 7, n, out); break;
    default: slm__dot_group_nq_avx512(k16, k32, q, stride, 8, n, out); break;
    }
}
SLM__MAYBE_UNUSED static void slm__dot_f16_group_avx512(const uint16_t *k, const float *q, size_t stride, int nq, int n,
                                                        float *out) {
    slm__dot_group_avx512(k, NULL, q, stride, nq, n, out);
}
SLM__MAYBE_UNUSED static void slm__dot_f32_group_avx512(const float *k, const float *q, size_t stride, int nq, int n,
                                                        float *out) {
    slm__dot_group_avx512(NULL, k, q, stride, nq, n, out);
}
/* 64 columns of the outputs of up to four heads in sixteen registers over
   all positions, each value vector loaded (converted) once for them all;
   then the tail columns masked, head by head: each element gets the fused
   multiply-adds of slm__axpy_*, whatever the vector width or the heads
   together, so this and the AVX2 version agree bit for bit. */
#define SLM__ATTN_VALUES512(NAME, T, LOAD16, MASKLOAD16)                                                               \
    SLM__INLINE void NAME##_64(float *out, size_t out_stride, const float *att, size_t att_stride, const T *v,         \
                               size_t v_stride, int n_pos, const int nh, int j, int accumulate) {                      \
        __m512 acc[4][4];                                                                                              \
        int h, p, i;                                                                                                   \
        SLM__UNROLL for (h = 0; h < nh; h++) SLM__UNROLL for (i = 0; i < 4; i++) acc[h][i] =                           \
            accumulate ? _mm512_loadu_ps(out + h * out_stride + j + 16 * i) : _mm512_setzero_ps();                     \
        for (p = 0; p < n_pos; p++) {                                                                                  \
            const T *vp = v + p * v_stride + j;                                                                        \
            __m512 vv[4];                                                                                              \
            SLM__UNROLL for (i = 0; i < 4; i++) vv[i] = LOAD16(vp + 16 * i);                                           \
            SLM__UNROLL for (h = 0; h < nh; h++) {                                                                     \
                __m512 ap = _mm512_set1_ps(att[h * att_stride + p]);                                                   \
                SLM__UNROLL for (i = 0; i < 4; i++) acc[h][i] = _mm512_fmadd_ps(ap, vv[i], acc[h][i]);                 \
            }                                                                                                          \
        }                                                                                                              \
        SLM__UNROLL for (h = 0; h < nh; h++) SLM__UNROLL for (i = 0; i < 4; i++)                                       \
            _mm512_storeu_ps(out + h * out_stride + j + 16 * i, acc[h][i]);                                            \
    }                                                                                                                  \
    SLM__MAYBE_UNUSED static void NAME(float *out, size_t out_stride, const float *att, size_t att_stride, const T *v, \
                                       size_t v_stride, int n_pos, int nq, int n, int accumulate) {                    \
        int h, j, p, h0;                                                                                               \
        for (j = 0; j + 64 <= n; j += 64)                                                                              \
            for (h0 = 0; h0 < nq; h0 += 4) {                                                                           \
                float *o = out + h0 * out_stride;                                                                      \
                const float *a = att + h0 * att_stride;                                                                \
                switch (SLM__MIN(4, nq - h0)) {                                                                        \
                case 1: NAME##_64(o, out_stride, a, att_stride, v, v_stride, n_pos, 1, j, accumulate); break;          \
                case 2: NAME##_64(o, out_stride, a, att_stride, v, v_stride, n_pos, 2, j, accumulate); break;          \
                case 3: NAME##_64(o, out_stride, a, att_stride, v, v_stride, n_pos, 3, j, accumulate); break;          \
                default: NAME##_64(o, out_stride, a, att_stride, v, v_stride, n_pos, 4, j, accumulate); break;         \
                }                                                                                                      \
            }                                                                                                          \
        for (h = 0; h < nq; h++) {                                                                                     \
            const float *a = att + h * att_stride;                                                                     \
            float *o = out + h * out_stride;                                                                           \
            for (j = n / 64 * 64; j < n; j += 16) {                                                                    \
                __mmask16 m = (__mmask16)(n - j >= 16 ? 0xffffu : (1u << (n - j)) - 1);                                \
                __m512 acc = accumulate ? _mm512_maskz_loadu_ps(m, o + j) : _mm512_setzero_ps();                       \
                for (p = 0; p < n_pos; p++)                                                                            \
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(a[p]), MASKLOAD16(m, v + p * v_stride + j), acc);             \
                _mm512_mask_storeu_ps(o + j, m, acc);                                                                  \
            }                                                                                                          \
        }                                                                                                              \
    }
#define SLM__LOAD16_F16(p)        _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define SLM__LOAD16_F32(p)        _mm512_loadu_ps(p)
#define SLM__MASKLOAD16_F16(m, p) _mm512_cvtph_ps(_mm256_maskz_loadu_epi16((m), (p)))
#define SLM__MASKLOAD16_F32(m, p) _mm512_maskz_loadu_ps((m), (p))
SLM__ATTN_VALUES512(slm__attn_values_f16_avx512, uint16_t, SLM__LOAD16_F16, SLM__MASKLOAD16_F16)
SLM__ATTN_VALUES512(slm__attn_values_f32_avx512, float, SLM__LOAD16_F32, SLM__MASKLOAD16_F32)
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

/* The q8_0 KV cache: a head's keys or values as q8_0 blocks of their own
   (the last one partial when head_dim is not a multiple of 32, zero past the
   end). Scores and value sums take each value as scale x quant, which a
   float holds exactly, and go on in float arithmetic as for f16 caches;
   integer dot products would also quantize the queries and the scores. */
static void slm__quantize_kv_q8_0(const float *x, slm__block_q8_0 *y, int n) {
    int full = n / SLM__QK * SLM__QK;
    slm__quantize_q8_0(x, y, full);
    if (full < n) {
        float tail[SLM__QK];
        memset(tail, 0, sizeof tail);
        memcpy(tail, x + full, (size_t)(n - full) * sizeof(float));
        slm__quantize_q8_0(tail, y + full / SLM__QK, SLM__QK);
    }
}

/* value j of a row of q8_0 blocks */
SLM__INLINE float slm__q8_0_at(const slm__block_q8_0 *b, int j) {
    return slm_fp16_to_fp32(b[j / SLM__QK].d) * (float)b[j / SLM__QK].q[j % SLM__QK];
}

SLM__MAYBE_UNUSED static void slm__dot_q8_0_group_ref(const slm__block_q8_0 *k, const float *q, size_t stride, int nq,
                                                      int n, float *out) {
    int i, j;
    for (i = 0; i < nq; i++) {
        float sum = 0.0f;
        for (j = 0; j < n; j++) sum += slm__q8_0_at(k, j) * q[i * stride + j];
        out[i] = sum;
    }
}

/* out[h] = sum over positions p of att[h][p] * v[p] (v[p] at v + p * v_stride
   blocks), from zero or, with accumulate, on from out's values */
SLM__MAYBE_UNUSED static void slm__attn_values_q8_0_ref(float *out, size_t out_stride, const float *att,
                                                        size_t att_stride, const slm__block_q8_0 *v, size_t v_stride,
                                                        int n_pos, int nq, int n, int accumulate) {
    int h, p, j;
    for (h = 0; h < nq; h++) {
        float *o = out + h * out_stride;
        if (!accumulate) memset(o, 0, (size_t)n * sizeof(float));
        for (p = 0; p < n_pos; p++) {
            const slm__block_q8_0 *vp = v + p * v_stride;
            for (j = 0; j < n; j++) o[j] += att[h * att_stride + p] * slm__q8_0_at(vp, j);
        }
    }
}

#if defined(SLM__AVX2)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__INLINE __m256 slm__load8_q8(const slm__block_q8_0 *b, int j, __m256 d) {
    return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->q + j)))));
}
/* nq is a constant at each call below, so the accumulators stay in registers */
SLM__INLINE void slm__dot_q8_0_group_nq(const slm__block_q8_0 *k, const float *q, size_t stride, const int nq, int n,
                                        float *out) {
    __m256 acc[SLM__GROUP];
    int i, b, j;
    SLM__UNROLL for (i = 0; i < nq; i++) acc[i] = _mm256_setzero_ps();
    for (b = 0; b * SLM__QK < n; b++) {
        int len = SLM__MIN(SLM__QK, n - b * SLM__QK);
        __m256 d = _mm256_set1_ps(slm_fp16_to_fp32(k[b].d));
        for (j = 0; j + 8 <= len; j += 8) {
            __m256 kv = slm__load8_q8(k + b, j, d);
            SLM__UNROLL for (i = 0; i < nq; i++) acc[i] =
                _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + i * stride + b * SLM__QK + j), acc[i]);
        }
    }
    for (i = 0; i < nq; i++) {
        float sum = slm__hsum256(acc[i]);
        for (j = n / 8 * 8; j < n; j++) sum += slm__q8_0_at(k, j) * q[i * stride + j];
        out[i] = sum;
    }
}
SLM__MAYBE_UNUSED static void slm__dot_q8_0_group_avx2(const slm__block_q8_0 *k, const float *q, size_t stride, int nq,
                                                       int n, float *out) {
    switch (nq) {
    case 1: slm__dot_q8_0_group_nq(k, q, stride, 1, n, out); break;
    case 2: slm__dot_q8_0_group_nq(k, q, stride, 2, n, out); break;
    case 3: slm__dot_q8_0_group_nq(k, q, stride, 3, n, out); break;
    case 4: slm__dot_q8_0_group_nq(k, q, stride, 4, n, out); break;
    case 5: slm__dot_q8_0_group_nq(k, q, stride, 5, n, out); break;
    case 6: slm__dot_q8_0_group_nq(k, q, stride, 6, n, out); break;
    case 7: slm__dot_q8_0_group_nq(k, q, stride, 7, n, out); break;
    default: slm__dot_q8_0_group_nq(k, q, stride, 8, n, out); break;
    }
}
/* One block's 32 columns of a head's output over all positions, in
   registers; each position's weight and block scale multiplied once. */
SLM__INLINE void slm__attn_block_q8_0_avx2(float *o, const float *a, const slm__block_q8_0 *v, size_t v_stride,
                                           int n_pos, int accumulate) {
    __m256 acc[4];
    int p, i;
    SLM__UNROLL for (i = 0; i < 4; i++) acc[i] = accumulate ? _mm256_loadu_ps(o + 8 * i) : _mm256_setzero_ps();
    for (p = 0; p < n_pos; p++) {
        const slm__block_q8_0 *vb = v + p * v_stride;
        __m256 c = _mm256_set1_ps(a[p] * slm_fp16_to_fp32(vb->d));
        SLM__UNROLL for (i = 0; i < 4; i++) acc[i] = _mm256_fmadd_ps(
            c, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(vb->q + 8 * i)))), acc[i]);
    }
    SLM__UNROLL for (i = 0; i < 4; i++) _mm256_storeu_ps(o + 8 * i, acc[i]);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif
#if defined(SLM__NEON)
/* eight quants of a block times its scale, as two vectors of four floats */
SLM__INLINE void slm__load8_q8_neon(const slm__block_q8_0 *b, int j, float32x4_t *lo, float32x4_t *hi) {
    int16x8_t w = vmovl_s8(vld1_s8(b->q + j));
    float d = slm_fp16_to_fp32(b->d);
    *lo = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), d);
    *hi = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(w))), d);
}
static void slm__dot_q8_0_group_neon(const slm__block_q8_0 *k, const float *q, size_t stride, int nq, int n,
                                     float *out) {
    float32x4_t acc[SLM__GROUP];
    int i, b, j;
    for (i = 0; i < nq; i++) acc[i] = vdupq_n_f32(0.0f);
    for (b = 0; b * SLM__QK < n; b++) {
        int len = SLM__MIN(SLM__QK, n - b * SLM__QK);
        for (j = 0; j + 8 <= len; j += 8) {
            float32x4_t lo, hi;
            slm__load8_q8_neon(k + b, j, &lo, &hi);
            for (i = 0; i < nq; i++) {
                const float *x = q + i * stride + b * SLM__QK + j;
                acc[i] = vfmaq_f32(vfmaq_f32(acc[i], lo, vld1q_f32(x)), hi, vld1q_f32(x + 4));
            }
        }
    }
    for (i = 0; i < nq; i++) {
        float sum = vaddvq_f32(acc[i]);
        for (j = n / 8 * 8; j < n; j++) sum += slm__q8_0_at(k, j) * q[i * stride + j];
        out[i] = sum;
    }
}
SLM__INLINE void slm__attn_block_q8_0_neon(float *o, const float *a, const slm__block_q8_0 *v, size_t v_stride,
                                           int n_pos, int accumulate) {
    float32x4_t acc[8];
    int p, i;
    SLM__UNROLL for (i = 0; i < 8; i++) acc[i] = accumulate ? vld1q_f32(o + 4 * i) : vdupq_n_f32(0.0f);
    for (p = 0; p < n_pos; p++) {
        const slm__block_q8_0 *vb = v + p * v_stride;
        float c = a[p] * slm_fp16_to_fp32(vb->d);
        SLM__UNROLL for (i = 0; i < 4; i++) {
            int16x8_t w = vmovl_s8(vld1_s8(vb->q + 8 * i));
            acc[2 * i] = vfmaq_n_f32(acc[2 * i], vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), c);
            acc[2 * i + 1] = vfmaq_n_f32(acc[2 * i + 1], vcvtq_f32_s32(vmovl_s16(vget_high_s16(w))), c);
        }
    }
    SLM__UNROLL for (i = 0; i < 8; i++) vst1q_f32(o + 4 * i, acc[i]);
}
#endif
/* the block kernel over a head's full blocks (accumulate: as slm__attn_values_q8_0_ref) */
#define SLM__ATTN_VALUES_Q8_0_BLOCKS(name, block)                                                                  \
    static void name(float *out, size_t out_stride, const float *att, size_t att_stride, const slm__block_q8_0 *v, \
                     size_t v_stride, int n_pos, int nq, int n, int accumulate) {                                  \
        int h, b, p, j;                                                                                            \
        for (h = 0; h < nq; h++) {                                                                                 \
            const float *a = att + h * att_stride;                                                                 \
            float *o = out + h * out_stride;                                                                       \
            for (b = 0; b * SLM__QK < n; b++) {                                                                    \
                int len = SLM__MIN(SLM__QK, n - b * SLM__QK);                                                      \
                if (len == SLM__QK)                                                                                \
                    block(o + b * SLM__QK, a, v + b, v_stride, n_pos, accumulate);                                 \
                else /* the partial last block of a head_dim that is not a multiple of 32 */                       \
                    for (j = 0; j < len; j++) {                                                                    \
                        float sum = accumulate ? o[b * SLM__QK + j] : 0.0f;                                        \
                        for (p = 0; p < n_pos; p++) sum += a[p] * slm__q8_0_at(v + p * v_stride, b * SLM__QK + j); \
                        o[b * SLM__QK + j] = sum;                                                                  \
                    }                                                                                              \
            }                                                                                                      \
        }                                                                                                          \
    }
#if defined(slm__attn_block_q8_0) && !defined(SLM__DISPATCH)
SLM__ATTN_VALUES_Q8_0_BLOCKS(slm__attn_values_q8_0_blocks, slm__attn_block_q8_0)
#endif

/* Scores of n_pos consecutive positions for the nq query heads of one KV
   head: out[h * out_stride + p] = the dot product of the key at k + p *
   k_stride with the query at q + h * q_stride, each exactly as the group
   kernel above computes it for that one position (so any tile of positions
   gives the same scores, decode's included). The SIMD versions below get
   there without a horizontal sum per (head, position): the vectors of 16
   (8) positions are summed together by a transpose-reduce whose tree for
   every lane is that of slm__hsum512 (slm__hsum256). */
#define SLM__ATTN_SCORES_GENERIC(name, K, group)                                                              \
    SLM__MAYBE_UNUSED static void name(float *out, size_t out_stride, const K *k, size_t k_stride, int n_pos, \
                                       const float *q, size_t q_stride, int nq, int n) {                      \
        float sc[SLM__GROUP];                                                                                 \
        int p, h;                                                                                             \
        for (p = 0; p < n_pos; p++) {                                                                         \
            group(k + p * k_stride, q, q_stride, nq, n, sc);                                                  \
            for (h = 0; h < nq; h++) out[h * out_stride + p] = sc[h];                                         \
        }                                                                                                     \
    }
#if !defined(SLM__DISPATCH)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f16_generic, uint16_t, slm__dot_f16_group)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f32_generic, float, slm__dot_f32_group)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_q8_0_generic, slm__block_q8_0, slm__dot_q8_0_group)
#endif

#if defined(SLM__AVX2) && defined(SLM__F16C)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
/* The sums of eight vectors, v[s]'s in lane s / 2 (s even) or 4 + s / 2
   (s odd); each lane by slm__hsum256's tree: halves, then pairs, then the
   last two. */
SLM__INLINE __m256 slm__hsum8x8(const __m256 *v) {
    __m256 a[4], z0, z1;
    int i;
    SLM__UNROLL for (i = 0; i < 4; i++) a[i] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x20),
                                                             _mm256_permute2f128_ps(v[2 * i], v[2 * i + 1], 0x31));
    z0 = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a[0]), _mm256_castps_pd(a[1]))),
                       _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a[0]), _mm256_castps_pd(a[1]))));
    z1 = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(a[2]), _mm256_castps_pd(a[3]))),
                       _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(a[2]), _mm256_castps_pd(a[3]))));
    return _mm256_add_ps(_mm256_shuffle_ps(z0, z1, 0x88), _mm256_shuffle_ps(z0, z1, 0xdd));
}
/* nq is a constant at each call below, so the accumulators stay in
   registers: each position's key converted once for the nq heads, as in
   slm__dot_group_nq / slm__dot_q8_0_group_nq */
SLM__INLINE void slm__attn_scores_nq_avx2(float *out, size_t out_stride, const uint16_t *k16, const float *k32,
                                          const slm__block_q8_0 *k8, size_t k_stride, int n_pos, const float *q,
                                          size_t q_stride, const int nq, int n) {
    __m256 part[SLM__GROUP][8];
    int p0, i, h, j, b, n8 = n / 8 * 8;
    for (p0 = 0; p0 < n_pos; p0 += 8) {
        int cnt = SLM__MIN(8, n_pos - p0);
        for (i = 0; i < cnt; i++) {
            size_t at = (size_t)(p0 + i) * k_stride;
            int slot = i < 4 ? 2 * i : 2 * (i - 4) + 1; /* position i's lane of slm__hsum8x8 */
            __m256 acc[SLM__GROUP];
            SLM__UNROLL for (h = 0; h < nq; h++) acc[h] = _mm256_setzero_ps();
            if (k8) {
                const slm__block_q8_0 *kb = k8 + at;
                for (b = 0; b * SLM__QK < n8; b++) {
                    int len = SLM__MIN(SLM__QK, n8 - b * SLM__QK);
                    __m256 d = _mm256_set1_ps(slm_fp16_to_fp32(kb[b].d));
                    for (j = 0; j < len; j += 8) {
                        __m256 kv = slm__load8_q8(kb + b, j, d);
                        SLM__UNROLL for (h = 0; h < nq; h++) acc[h] =
                            _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + h * q_stride + b * SLM__QK + j), acc[h]);
                    }
                }
            } else {
                for (j = 0; j < n8; j += 8) {
                    __m256 kv = k16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k16 + at + j)))
                                    : _mm256_loadu_ps(k32 + at + j);
                    SLM__UNROLL for (h = 0; h < nq; h++) acc[h] =
                        _mm256_fmadd_ps(kv, _mm256_loadu_ps(q + h * q_stride + j), acc[h]);
                }
            }
            SLM__UNROLL for (h = 0; h < nq; h++) part[h][slot] = acc[h];
        }
        for (h = 0; h < nq; h++) {
            float sums[8];
            for (i = cnt; i < 8; i++) part[h][i < 4 ? 2 * i : 2 * (i - 4) + 1] = _mm256_setzero_ps();
            _mm256_storeu_ps(sums, slm__hsum8x8(part[h]));
            for (i = 0; i < cnt; i++) out[h * out_stride + p0 + i] = sums[i];
        }
        if (n8 < n) /* the tails after the sums, as the group kernels add them */
            for (i = 0; i < cnt; i++) {
                size_t at = (size_t)(p0 + i) * k_stride;
                for (h = 0; h < nq; h++) {
                    const float *x = q + h * q_stride;
                    float sum = out[h * out_stride + p0 + i];
                    if (k16)
                        for (j = n8; j < n; j++) sum += slm_fp16_to_fp32(k16[at + j]) * x[j];
                    else if (k32)
                        for (j = n8; j < n; j++) sum += k32[at + j] * x[j];
                    else
                        for (j = n8; j < n; j++) sum += slm__q8_0_at(k8 + at, j) * x[j];
                    out[h * out_stride + p0 + i] = sum;
                }
            }
    }
}
static void slm__attn_scores_avx2(float *out, size_t out_stride, const uint16_t *k16, const float *k32,
                                  const slm__block_q8_0 *k8, size_t k_stride, int n_pos, const float *q,
                                  size_t q_stride, int nq, int n) {
    switch (nq) {
#define SLM__SCORES_NQ(c) \
    case c: slm__attn_scores_nq_avx2(out, out_stride, k16, k32, k8, k_stride, n_pos, q, q_stride, c, n); break;
        SLM__SCORES_NQ(1)
        SLM__SCORES_NQ(2)
        SLM__SCORES_NQ(3)
        SLM__SCORES_NQ(4)
        SLM__SCORES_NQ(5)
        SLM__SCORES_NQ(6)
        SLM__SCORES_NQ(7)
#undef SLM__SCORES_NQ
    default: slm__attn_scores_nq_avx2(out, out_stride, k16, k32, k8, k_stride, n_pos, q, q_stride, 8, n); break;
    }
}
SLM__MAYBE_UNUSED static void slm__attn_scores_f16_avx2(float *out, size_t out_stride, const uint16_t *k,
                                                        size_t k_stride, int n_pos, const float *q, size_t q_stride,
                                                        int nq, int n) {
    slm__attn_scores_avx2(out, out_stride, k, NULL, NULL, k_stride, n_pos, q, q_stride, nq, n);
}
SLM__MAYBE_UNUSED static void slm__attn_scores_f32_avx2(float *out, size_t out_stride, const float *k, size_t k_stride,
                                                        int n_pos, const float *q, size_t q_stride, int nq, int n) {
    slm__attn_scores_avx2(out, out_stride, NULL, k, NULL, k_stride, n_pos, q, q_stride, nq, n);
}
SLM__MAYBE_UNUSED static void slm__attn_scores_q8_0_avx2(float *out, size_t out_stride, const slm__block_q8_0 *k,
                                                         size_t k_stride, int n_pos, const float *q, size_t q_stride,
                                                         int nq, int n) {
    slm__attn_scores_avx2(out, out_stride, NULL, NULL, k, k_stride, n_pos, q, q_stride, nq, n);
}
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_generic_f16_avx512, uint16_t, slm__dot_f16_group_avx512)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_generic_f32_avx512, float, slm__dot_f32_group_avx512)
/* The sums of sixteen vectors, v[s]'s in lane 4 (s % 4) + s / 4; each lane
   by slm__hsum512's tree (_mm512_reduce_add_ps: halves, quarters, then
   the two pairs, then the last two), with ~15 shuffles for all sixteen. */
SLM__INLINE __m512 slm__hsum16x16(const __m512 *v) {
    __m512 a[8], b[4], c0, c1, c2, c3;
    int i;
    SLM__UNROLL for (i = 0; i < 8; i++) a[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                                                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xee));
    SLM__UNROLL for (i = 0; i < 4; i++) b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88),
                                                             _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xdd));
    c0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b[0]), _mm512_castps_pd(b[1])));
    c1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b[0]), _mm512_castps_pd(b[1])));
    c2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b[2]), _mm512_castps_pd(b[3])));
    c3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b[2]), _mm512_castps_pd(b[3])));
    c0 = _mm512_add_ps(c0, c1);
    c2 = _mm512_add_ps(c2, c3);
    return _mm512_add_ps(_mm512_shuffle_ps(c0, c2, 0x88), _mm512_shuffle_ps(c0, c2, 0xdd));
}
/* nv (the key's vectors of 16, the last one masked by tail) is a constant
   at each call below, so the key stays in registers */
SLM__INLINE void slm__attn_scores_nv_avx512(float *out, size_t out_stride, const uint16_t *k16, const float *k32,
                                            size_t k_stride, int n_pos, const float *q, size_t q_stride, int nq,
                                            const int nv, __mmask16 tail) {
    __m512 part[SLM__GROUP][16], kv[8];
    int p0, i, h, j;
    for (p0 = 0; p0 < n_pos; p0 += 16) {
        int cnt = SLM__MIN(16, n_pos - p0);
        for (i = 0; i < cnt; i++) {
            size_t at = (size_t)(p0 + i) * k_stride;
            SLM__UNROLL for (j = 0; j < nv; j++) {
                __mmask16 m = j == nv - 1 ? tail : (__mmask16)0xffff;
                kv[j] = k16 ? _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, k16 + at + 16 * j))
                            : _mm512_maskz_loadu_ps(m, k32 + at + 16 * j);
            }
            for (h = 0; h < nq; h++) {
                const float *x = q + h * q_stride;
                __m512 acc = _mm512_setzero_ps();
                SLM__UNROLL for (j = 0; j < nv; j++) acc = _mm512_fmadd_ps(
                    kv[j], _mm512_maskz_loadu_ps(j == nv - 1 ? tail : (__mmask16)0xffff, x + 16 * j), acc);
                part[h][4 * (i % 4) + i / 4] = acc; /* position i's lane of slm__hsum16x16 */
            }
        }
        for (h = 0; h < nq; h++) {
            for (i = cnt; i < 16; i++) part[h][4 * (i % 4) + i / 4] = _mm512_setzero_ps();
            _mm512_mask_storeu_ps(out + h * out_stride + p0, (__mmask16)((1u << cnt) - 1), slm__hsum16x16(part[h]));
        }
    }
}
static void slm__attn_scores_avx512(float *out, size_t out_stride, const uint16_t *k16, const float *k32,
                                    size_t k_stride, int n_pos, const float *q, size_t q_stride, int nq, int n) {
    __mmask16 tail = (__mmask16)(n % 16 ? (1u << (n % 16)) - 1 : 0xffffu);
    switch ((n + 15) / 16) {
#define SLM__SCORES_NV(nv) \
    case nv: slm__attn_scores_nv_avx512(out, out_stride, k16, k32, k_stride, n_pos, q, q_stride, nq, nv, tail); break;
        SLM__SCORES_NV(1)
        SLM__SCORES_NV(2)
        SLM__SCORES_NV(3)
        SLM__SCORES_NV(4)
        SLM__SCORES_NV(5)
        SLM__SCORES_NV(6)
        SLM__SCORES_NV(7)
        SLM__SCORES_NV(8)
#undef SLM__SCORES_NV
    default: /* longer heads: position by position */
        if (k16)
            slm__attn_scores_generic_f16_avx512(out, out_stride, k16, k_stride, n_pos, q, q_stride, nq, n);
        else
            slm__attn_scores_generic_f32_avx512(out, out_stride, k32, k_stride, n_pos, q, q_stride, nq, n);
    }
}
SLM__MAYBE_UNUSED static void slm__attn_scores_f16_avx512(float *out, size_t out_stride, const uint16_t *k,
                                                          size_t k_stride, int n_pos, const float *q, size_t q_stride,
                                                          int nq, int n) {
    slm__attn_scores_avx512(out, out_stride, k, NULL, k_stride, n_pos, q, q_stride, nq, n);
}
SLM__MAYBE_UNUSED static void slm__attn_scores_f32_avx512(float *out, size_t out_stride, const float *k,
                                                          size_t k_stride, int n_pos, const float *q, size_t q_stride,
                                                          int nq, int n) {
    slm__attn_scores_avx512(out, out_stride, NULL, k, k_stride, n_pos, q, q_stride, nq, n);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
SLM__TARGET_END
#endif

/* The best set for a CPU, from CPUID leaf 1's ECX, leaf 7's EBX and ECX and
   XCR0 (XGETBV; 0 when the OS has not enabled XSAVE): an index into
   slm__kernel_sets (0 plain C, 1 AVX2, 2 AVX-512 VNNI). A pure function, in
   every build, so the tests can fake any CPU. A set
   needs both the instructions and the OS saving their registers (XCR0: the
   ymm state for AVX2, also the opmask and zmm states for AVX-512), else its
   first instruction faults. AVX-512 without VNNI (Skylake-X, Cascade Lake
   has VNNI) runs the AVX2 set: the one AVX-512 set compiled here needs it. */
SLM__MAYBE_UNUSED static int slm__kernel_set_for_cpu(uint32_t leaf1_ecx, uint32_t leaf7_ebx, uint32_t leaf7_ecx,
                                                     uint64_t xcr0) {
    int fma = (leaf1_ecx >> 12) & 1, osxsave = (leaf1_ecx >> 27) & 1, avx = (leaf1_ecx >> 28) & 1;
    int f16c = (leaf1_ecx >> 29) & 1, avx2 = (leaf7_ebx >> 5) & 1, avx512f = (leaf7_ebx >> 16) & 1;
    int avx512bw = (leaf7_ebx >> 30) & 1, avx512vl = (leaf7_ebx >> 31) & 1, vnni = (leaf7_ecx >> 11) & 1;
    int ymm_saved = osxsave && (xcr0 & 0x6) == 0x6, zmm_saved = osxsave && (xcr0 & 0xe6) == 0xe6;
    if (!(ymm_saved && avx && avx2 && fma && f16c)) return 0;
    if (zmm_saved && avx512f && avx512bw && avx512vl && vnni) return 2;
    return 1;
}

/* The best set for an aarch64 Linux (or Android) system, from its hwcaps
   (getauxval(AT_HWCAP)): an index into slm__kernel_sets (0 NEON, 1 NEON
   with the dot product). The kernel lists a feature in them only when it
   lets programs use it. A pure function, in every build, so the tests can
   fake any system. */
#define SLM__HWCAP_ASIMD   (1ull << 1)  /* Linux's HWCAP_ASIMD: NEON */
#define SLM__HWCAP_ASIMDDP (1ull << 20) /* HWCAP_ASIMDDP: sdot/udot, which older libc headers lack */
SLM__MAYBE_UNUSED static int slm__kernel_set_for_hwcap(uint64_t hwcap) {
    return (hwcap & SLM__HWCAP_ASIMD) && (hwcap & SLM__HWCAP_ASIMDDP) ? 1 : 0;
}

/* ---- exp, softmax, SiLU and RMSNorm ----
   The float parts of a layer. slm__expf is e^x as a polynomial that every
   instruction set evaluates with the same operations in the same order, each
   rounded the same (fused multiply-adds written as fmaf in the reference), so
   the vector versions give the reference's results bit for bit, and libm's
   expf (a call per element, and not the same function on every libc) is out
   of the hot loops. Range reduction: x = k ln2 + r with k the integer nearest
   x / ln2 and |r| <= ln2 / 2, ln2 in two parts (hi + lo) so that k ln2 is
   exact enough; e^r by Cephes' expf polynomial (1 + r + r^2 P(r), degree 5);
   2^k as two normal powers of two 2^k1 2^k2, so that the results just below
   the overflow (k = 128) and the subnormal ones (k down to -150) need no
   special case and the last multiply rounds once. Inputs are clamped to
   [-104, 89] first: below, e^x rounds to 0 (so exp(-inf) = 0, which masked
   softmax scores rely on); above, to +inf. NaN stays NaN. Error against a
   double-precision exp: at most 1.013 ulp over every float of [-104, 89]
   (tests/test_internals.c: expf, expf_all_floats; the bound tested is 1.5).
   Softmax and RMSNorm sum in 16 lanes (element i into lane i % 16, then a
   fixed tree), the way a 512-bit register does, so that these too are the
   same bit for bit on every instruction set. */
#define SLM__EXPF_LO      -104.0f
#define SLM__EXPF_HI      89.0f
#define SLM__EXPF_LOG2E   1.44269502f     /* 0x1.715476p+0 (no hex floats in C++11) */
#define SLM__EXPF_LN2_HI  0.693147182f    /* 0x1.62e430p-1, ln2 rounded */
#define SLM__EXPF_LN2_LO  -1.90465430e-9f /* -0x1.05c610p-29, ln2 - SLM__EXPF_LN2_HI */
#define SLM__EXPF_SHIFTER 12582912.0f     /* 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer */
#define SLM__EXPF_P0      1.9875691500e-4f
#define SLM__EXPF_P1      1.3981999507e-3f
#define SLM__EXPF_P2      8.3334519073e-3f
#define SLM__EXPF_P3      4.1665795894e-2f
#define SLM__EXPF_P4      1.6666665459e-1f
#define SLM__EXPF_P5      5.0000001201e-1f

SLM__MAYBE_UNUSED static float slm__expf_ref(float x) {
    float t, k, r, p;
    int ki, k1;
    if (x != x) return x + x;
    x = x < SLM__EXPF_LO ? SLM__EXPF_LO : x;
    x = x > SLM__EXPF_HI ? SLM__EXPF_HI : x;
    t = fmaf(x, SLM__EXPF_LOG2E, SLM__EXPF_SHIFTER);
    k = t - SLM__EXPF_SHIFTER;
    r = fmaf(k, -SLM__EXPF_LN2_HI, x);
    r = fmaf(k, -SLM__EXPF_LN2_LO, r);
    p = fmaf(SLM__EXPF_P0, r, SLM__EXPF_P1);
    p = fmaf(p, r, SLM__EXPF_P2);
    p = fmaf(p, r, SLM__EXPF_P3);
    p = fmaf(p, r, SLM__EXPF_P4);
    p = fmaf(p, r, SLM__EXPF_P5);
    p = fmaf(p, r * r, r) + 1.0f;
    ki = (int)k;
    k1 = (ki + 256) / 2 - 128; /* floor(k / 2), as an arithmetic shift */
    return p * slm__bits_f32((uint32_t)(k1 + 127) << 23) * slm__bits_f32((uint32_t)(ki - k1 + 127) << 23);
}

/* the 16 lanes' sums added as a 512-bit register's halves are: lane j + lane j + 8, then + 4, + 2, + 1 */
static float slm__sum16(float *acc) {
    int w, j;
    for (w = 8; w >= 1; w /= 2)
        for (j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

/* x[0..n) = softmax(x / div): attention scores are divided by sqrt(head_dim)
   here, in the same pass. The division (rather than a multiply by 1 / div)
   keeps what the scores were. */
SLM__MAYBE_UNUSED static void slm__softmax_ref(float *x, int n, float div) {
    float max, sum, acc[16] = { 0 };
    int i;
    if (n <= 0) return;
    max = x[0];
    for (i = 1; i < n; i++)
        if (x[i] > max) max = x[i];
    max /= div; /* dividing by div > 0 keeps the order: the max of the quotients */
    for (i = 0; i < n; i++) {
        x[i] = slm__expf_ref(x[i] / div - max);
        acc[i & 15] += x[i];
    }
    sum = slm__sum16(acc);
    for (i = 0; i < n; i++) x[i] /= sum;
}

/* g[i] = SiLU(g[i]) u[i], the gated feed-forward's product: g / (1 + e^-g) u */
SLM__MAYBE_UNUSED static void slm__silu_mul_ref(float *g, const float *u, int n) {
    int i;
    for (i = 0; i < n; i++) g[i] = g[i] / (1.0f + slm__expf_ref(-g[i])) * u[i];
}

/* o = x / sqrt(mean(x^2) + eps) * weight (o may be x) */
SLM__MAYBE_UNUSED static void slm__rmsnorm_ref(float *o, const float *x, const float *weight, int n, float eps) {
    float ss, acc[16] = { 0 };
    int j;
    for (j = 0; j < n; j++) acc[j & 15] = fmaf(x[j], x[j], acc[j & 15]);
    ss = 1.0f / sqrtf(slm__sum16(acc) / (float)n + eps);
    for (j = 0; j < n; j++) o[j] = weight[j] * (ss * x[j]);
}

/* y[i] = slm_fp32_to_fp16(x[i]): the KV cache's f16 stores. The SIMD
   versions convert in one instruction, which rounds as the reference (to
   nearest even, subnormals and overflow to inf too) but keeps a NaN's
   payload where the reference gives the quiet NaN of its sign: the NaN lanes
   are redone by the reference. */
SLM__MAYBE_UNUSED static void slm__fp32_to_fp16_row_ref(const float *x, uint16_t *y, int n) {
    int i;
    for (i = 0; i < n; i++) y[i] = slm_fp32_to_fp16(x[i]);
}

#if defined(SLM__AVX2)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__INLINE __m256 slm__expf_avx2(__m256 x) {
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q), t, k, r, p;
    __m256i ki, k1;
    /* max/min return the constant for a NaN lane, which the blend below puts back */
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(SLM__EXPF_LO)), _mm256_set1_ps(SLM__EXPF_HI));
    t = _mm256_fmadd_ps(xc, _mm256_set1_ps(SLM__EXPF_LOG2E), _mm256_set1_ps(SLM__EXPF_SHIFTER));
    k = _mm256_sub_ps(t, _mm256_set1_ps(SLM__EXPF_SHIFTER));
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(-SLM__EXPF_LN2_HI), xc);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(-SLM__EXPF_LN2_LO), r);
    p = _mm256_fmadd_ps(_mm256_set1_ps(SLM__EXPF_P0), r, _mm256_set1_ps(SLM__EXPF_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SLM__EXPF_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SLM__EXPF_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SLM__EXPF_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(SLM__EXPF_P5));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    ki = _mm256_cvtps_epi32(k);
    k1 = _mm256_srai_epi32(ki, 1);
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k1, _mm256_set1_epi32(127)), 23)));
    p = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(
                             _mm256_add_epi32(_mm256_sub_epi32(ki, k1), _mm256_set1_epi32(127)), 23)));
    return _mm256_blendv_ps(p, _mm256_add_ps(x, x), nan);
}

SLM__MAYBE_UNUSED static void slm__softmax_avx2(float *x, int n, float div) {
    __m256 vmax = _mm256_set1_ps(-INFINITY), vdiv = _mm256_set1_ps(div), vm, a0, a1, vs;
    __m128 m4;
    float max, sum, acc[16];
    int i = 0;
    if (n <= 0) return;
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    max = _mm_cvtss_f32(m4);
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    max /= div;
    vm = _mm256_set1_ps(max);
    a0 = a1 = _mm256_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m256 e0 = slm__expf_avx2(_mm256_sub_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vdiv), vm));
        __m256 e1 = slm__expf_avx2(_mm256_sub_ps(_mm256_div_ps(_mm256_loadu_ps(x + i + 8), vdiv), vm));
        _mm256_storeu_ps(x + i, e0);
        _mm256_storeu_ps(x + i + 8, e1);
        a0 = _mm256_add_ps(a0, e0);
        a1 = _mm256_add_ps(a1, e1);
    }
    _mm256_storeu_ps(acc, a0);
    _mm256_storeu_ps(acc + 8, a1);
    for (; i < n; i++) {
        x[i] = slm__expf_ref(x[i] / div - max);
        acc[i & 15] += x[i];
    }
    sum = slm__sum16(acc);
    vs = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vs));
    for (; i < n; i++) x[i] /= sum;
}

SLM__MAYBE_UNUSED static void slm__silu_mul_avx2(float *g, const float *u, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i), e = slm__expf_avx2(_mm256_xor_ps(v, sign));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + slm__expf_ref(-g[i])) * u[i];
}

SLM__MAYBE_UNUSED static void slm__rmsnorm_avx2(float *o, const float *x, const float *weight, int n, float eps) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), vs;
    float ss, acc[16];
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 v0 = _mm256_loadu_ps(x + j), v1 = _mm256_loadu_ps(x + j + 8);
        a0 = _mm256_fmadd_ps(v0, v0, a0);
        a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    _mm256_storeu_ps(acc, a0);
    _mm256_storeu_ps(acc + 8, a1);
    for (; j < n; j++) acc[j & 15] = fmaf(x[j], x[j], acc[j & 15]);
    ss = 1.0f / sqrtf(slm__sum16(acc) / (float)n + eps);
    vs = _mm256_set1_ps(ss);
    for (j = 0; j + 8 <= n; j += 8)
        _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(weight + j), _mm256_mul_ps(vs, _mm256_loadu_ps(x + j))));
    for (; j < n; j++) o[j] = weight[j] * (ss * x[j]);
}

#if defined(SLM__F16C)
SLM__MAYBE_UNUSED static void slm__fp32_to_fp16_row_avx2(const float *x, uint16_t *y, int n) {
    int i = 0, j;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        int nan = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        if (nan)
            for (j = 0; j < 8; j++)
                if ((nan >> j) & 1) y[i + j] = slm_fp32_to_fp16(x[i + j]);
    }
    for (; i < n; i++) y[i] = slm_fp32_to_fp16(x[i]);
}
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__AVX512)
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
#if defined(__GNUC__) && !defined(__clang__)
/* g++ 12's false positive in its own AVX-512 headers, as above */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
SLM__INLINE __m512 slm__expf_avx512(__m512 x) {
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512 t, k, r, p;
    __m512i ki, k1;
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(SLM__EXPF_LO)), _mm512_set1_ps(SLM__EXPF_HI));
    t = _mm512_fmadd_ps(xc, _mm512_set1_ps(SLM__EXPF_LOG2E), _mm512_set1_ps(SLM__EXPF_SHIFTER));
    k = _mm512_sub_ps(t, _mm512_set1_ps(SLM__EXPF_SHIFTER));
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(-SLM__EXPF_LN2_HI), xc);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(-SLM__EXPF_LN2_LO), r);
    p = _mm512_fmadd_ps(_mm512_set1_ps(SLM__EXPF_P0), r, _mm512_set1_ps(SLM__EXPF_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SLM__EXPF_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SLM__EXPF_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SLM__EXPF_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(SLM__EXPF_P5));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
    ki = _mm512_cvtps_epi32(k);
    k1 = _mm512_srai_epi32(ki, 1);
    p = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(k1, _mm512_set1_epi32(127)), 23)));
    p = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(
                             _mm512_add_epi32(_mm512_sub_epi32(ki, k1), _mm512_set1_epi32(127)), 23)));
    return _mm512_mask_add_ps(p, nan, x, x);
}

SLM__MAYBE_UNUSED static void slm__softmax_avx512(float *x, int n, float div) {
    const __m512 vdiv = _mm512_set1_ps(div);
    __m512 vmax = _mm512_set1_ps(-INFINITY), vm, a = _mm512_setzero_ps(), vs;
    __mmask16 tail = (__mmask16)((1u << (n & 15)) - 1);
    float max, sum, acc[16];
    int i;
    if (n <= 0) return;
    for (i = 0; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    if (tail) vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail, x + i));
    max = _mm512_reduce_max_ps(vmax) / div;
    vm = _mm512_set1_ps(max);
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = slm__expf_avx512(_mm512_sub_ps(_mm512_div_ps(_mm512_loadu_ps(x + i), vdiv), vm));
        _mm512_storeu_ps(x + i, e);
        a = _mm512_add_ps(a, e);
    }
    if (tail) {
        __m512 e = slm__expf_avx512(_mm512_sub_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(tail, x + i), vdiv), vm));
        _mm512_mask_storeu_ps(x + i, tail, e);
        a = _mm512_mask_add_ps(a, tail, a, e);
    }
    _mm512_storeu_ps(acc, a);
    sum = slm__sum16(acc);
    vs = _mm512_set1_ps(sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), vs));
    if (tail) _mm512_mask_storeu_ps(x + i, tail, _mm512_div_ps(_mm512_maskz_loadu_ps(tail, x + i), vs));
}

SLM__MAYBE_UNUSED static void slm__silu_mul_avx512(float *g, const float *u, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512i sign =
        _mm512_set1_epi32((int)0x80000000u); /* -g by its sign bit, as the reference (no AVX512DQ xor_ps) */
    int i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, g + i),
               e = slm__expf_avx512(_mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), sign)));
        _mm512_mask_storeu_ps(g + i, m,
                              _mm512_mul_ps(_mm512_div_ps(v, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
    }
}

SLM__MAYBE_UNUSED static void slm__rmsnorm_avx512(float *o, const float *x, const float *weight, int n, float eps) {
    __m512 a = _mm512_setzero_ps(), vs;
    float ss, acc[16];
    int j;
    for (j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + j);
        a = _mm512_mask3_fmadd_ps(v, v, a, m);
    }
    _mm512_storeu_ps(acc, a);
    ss = 1.0f / sqrtf(slm__sum16(acc) / (float)n + eps);
    vs = _mm512_set1_ps(ss);
    for (j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
        _mm512_mask_storeu_ps(
            o + j, m,
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, weight + j), _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(m, x + j))));
    }
}
SLM__MAYBE_UNUSED static void slm__fp32_to_fp16_row_avx512(const float *x, uint16_t *y, int n) {
    int i, j;
    for (i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __mmask16 nan = _mm512_mask_cmp_ps_mask(m, v, v, _CMP_UNORD_Q);
        _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        if (nan)
            for (j = 0; j < 16; j++)
                if ((nan >> j) & 1) y[i + j] = slm_fp32_to_fp16(x[i + j]);
    }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#undef slm_fp16_to_fp32
SLM__TARGET_END
#endif

#if defined(SLM__NEON)
SLM__INLINE float32x4_t slm__expf_neon(float32x4_t x) {
    uint32x4_t num = vceqq_f32(x, x); /* all ones where x is not NaN */
    float32x4_t xc = vminq_f32(vmaxq_f32(x, vdupq_n_f32(SLM__EXPF_LO)), vdupq_n_f32(SLM__EXPF_HI)), t, k, r, p;
    int32x4_t ki, k1;
    xc = vbslq_f32(num, xc, vdupq_n_f32(0.0f)); /* NEON's max/min pass a NaN on: keep the lane finite */
    t = vfmaq_f32(vdupq_n_f32(SLM__EXPF_SHIFTER), xc, vdupq_n_f32(SLM__EXPF_LOG2E));
    k = vsubq_f32(t, vdupq_n_f32(SLM__EXPF_SHIFTER));
    r = vfmaq_f32(xc, k, vdupq_n_f32(-SLM__EXPF_LN2_HI));
    r = vfmaq_f32(r, k, vdupq_n_f32(-SLM__EXPF_LN2_LO));
    p = vfmaq_f32(vdupq_n_f32(SLM__EXPF_P1), vdupq_n_f32(SLM__EXPF_P0), r);
    p = vfmaq_f32(vdupq_n_f32(SLM__EXPF_P2), p, r);
    p = vfmaq_f32(vdupq_n_f32(SLM__EXPF_P3), p, r);
    p = vfmaq_f32(vdupq_n_f32(SLM__EXPF_P4), p, r);
    p = vfmaq_f32(vdupq_n_f32(SLM__EXPF_P5), p, r);
    p = vaddq_f32(vfmaq_f32(r, p, vmulq_f32(r, r)), vdupq_n_f32(1.0f));
    ki = vcvtnq_s32_f32(k);
    k1 = vshrq_n_s32(ki, 1);
    p = vmulq_f32(p, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(k1, vdupq_n_s32(127)), 23)));
    p = vmulq_f32(p, vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(vsubq_s32(ki, k1), vdupq_n_s32(127)), 23)));
    return vbslq_f32(num, p, vaddq_f32(x, x));
}

SLM__MAYBE_UNUSED static void slm__softmax_neon(float *x, int n, float div) {
    float32x4_t vmax = vdupq_n_f32(-INFINITY), vdiv = vdupq_n_f32(div), vm, a[4], vs;
    float max, sum, acc[16];
    int i = 0, j;
    if (n <= 0) return;
    for (; i + 4 <= n; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(x + i));
    max = vmaxvq_f32(vmax);
    for (; i < n; i++)
        if (x[i] > max) max = x[i];
    max /= div;
    vm = vdupq_n_f32(max);
    for (j = 0; j < 4; j++) a[j] = vdupq_n_f32(0.0f);
    for (i = 0; i + 16 <= n; i += 16)
        for (j = 0; j < 4; j++) {
            float32x4_t e = slm__expf_neon(vsubq_f32(vdivq_f32(vld1q_f32(x + i + 4 * j), vdiv), vm));
            vst1q_f32(x + i + 4 * j, e);
            a[j] = vaddq_f32(a[j], e);
        }
    for (j = 0; j < 4; j++) vst1q_f32(acc + 4 * j, a[j]);
    for (; i < n; i++) {
        x[i] = slm__expf_ref(x[i] / div - max);
        acc[i & 15] += x[i];
    }
    sum = slm__sum16(acc);
    vs = vdupq_n_f32(sum);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vdivq_f32(vld1q_f32(x + i), vs));
    for (; i < n; i++) x[i] /= sum;
}

SLM__MAYBE_UNUSED static void slm__silu_mul_neon(float *g, const float *u, int n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(g + i), e = slm__expf_neon(vnegq_f32(v));
        vst1q_f32(g + i, vmulq_f32(vdivq_f32(v, vaddq_f32(one, e)), vld1q_f32(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + slm__expf_ref(-g[i])) * u[i];
}

SLM__MAYBE_UNUSED static void slm__fp32_to_fp16_row_neon(const float *x, uint16_t *y, int n) {
    int i = 0, j;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        uint32x4_t num = vceqq_f32(v, v); /* all ones where v is not NaN */
        vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(v)));
        if (vminvq_u32(num) == 0)
            for (j = 0; j < 4; j++)
                if (x[i + j] != x[i + j]) y[i + j] = slm_fp32_to_fp16(x[i + j]);
    }
    for (; i < n; i++) y[i] = slm_fp32_to_fp16(x[i]);
}

SLM__MAYBE_UNUSED static void slm__rmsnorm_neon(float *o, const float *x, const float *weight, int n, float eps) {
    float32x4_t a[4], vs;
    float ss, acc[16];
    int j = 0, l;
    for (l = 0; l < 4; l++) a[l] = vdupq_n_f32(0.0f);
    for (; j + 16 <= n; j += 16)
        for (l = 0; l < 4; l++) {
            float32x4_t v = vld1q_f32(x + j + 4 * l);
            a[l] = vfmaq_f32(a[l], v, v);
        }
    for (l = 0; l < 4; l++) vst1q_f32(acc + 4 * l, a[l]);
    for (; j < n; j++) acc[j & 15] = fmaf(x[j], x[j], acc[j & 15]);
    ss = 1.0f / sqrtf(slm__sum16(acc) / (float)n + eps);
    vs = vdupq_n_f32(ss);
    for (j = 0; j + 4 <= n; j += 4) vst1q_f32(o + j, vmulq_f32(vld1q_f32(weight + j), vmulq_f32(vs, vld1q_f32(x + j))));
    for (; j < n; j++) o[j] = weight[j] * (ss * x[j]);
}
#endif

#if defined(SLM__DISPATCH)
/* ---- kernel sets (SLM_DISPATCH) --------------------------------------------
   An SLM_DISPATCH build holds three kernel sets on x86-64 (plain C, AVX2,
   AVX-512 VNNI) and two on aarch64 (NEON, NEON with the dot product), each
   the kernel table of the build with those -m flags, function for function,
   so that a forced set computes what that native build computes. The few
   functions built on other kernels (the generic attention loops, the _R16
   pairs, the q8_0 value blocks) get a copy per set under that set's target
   (the two NEON sets share those without integer dot products), so their
   inner calls stay direct (and inline): the block kernels they call
   (gemm_r16_nt, attn_block_q8_0) are no fields here. A pass runs its model's set: slm__forward_worker
   puts it in slm__kernels_here, per thread; the calls through it are per row
   group, per head or per position run, never per element.
   Adding a kernel to the table: a field here and one line in each set. */
struct slm__kernel_set {
    const char *name; /* as SLM__SIMD_NAME of the native build */
    float (*dot_f32)(const float *w, const float *x, int n);
    float (*dot_f16)(const uint16_t *w, const float *x, int n);
    float (*dot_bf16)(const uint16_t *w, const float *x, int n);
    void (*dotn_q8_0)(const slm__block_q8_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks, float *out);
    void (*dotn_q4_0)(const slm__block_q4_0 *const *w, int nr, const slm__block_q8_0 *x, int n_blocks, float *out);
    void (*dotm_q5_0)(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, int nt, int n_blocks,
                      float *out);
    void (*dotm_q5_1)(const uint8_t *w, const slm__block_q8_0 *x, const int32_t *xsum, size_t xs, int nt, int n_blocks,
                      float *out);
    void (*dotm_q4_K)(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super, float *out);
    void (*dotm_q5_K)(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super, float *out);
    void (*dotm_q6_K)(const uint8_t *w, const slm__block_q8_K *x, size_t xs, int nt, int n_super, float *out);
    /* NULL where the set has none: slm__matmul then calls dotm per row */
    void (*dotr_q4_K)(const uint8_t *w, size_t row_size, int nr, const slm__block_q8_K *x, size_t xs, int nt,
                      int n_super, float *out);
    void (*dotr_q6_K)(const uint8_t *w, size_t row_size, int nr, const slm__block_q8_K *x, size_t xs, int nt,
                      int n_super, float *out);
    void (*gemm_q4_K)(const uint8_t *w, size_t row_size, int n_super, const slm__block_q8_K *x, size_t xs, int nt,
                      float *out); /* NULL where the set has none */
    void (*gemm_r16)(int type, const uint8_t *group, int nb, const slm__block_q8_0 *x, const int32_t *xsum,
                     size_t x_stride, int nt, float *y, size_t y_stride);
    void (*quantize_act_blocks)(const float *x, slm__block_q8_0 *q, int32_t *sum, int n);
    void (*quantize_act_q8_K)(const float *x, slm__block_q8_K *y, int n);
    void (*axpy_f32)(float *out, float a, const float *v, int n);
    void (*axpy_f16)(float *out, float a, const uint16_t *v, int n);
    void (*dot_f16_group)(const uint16_t *k, const float *q, size_t stride, int nq, int n, float *out);
    void (*dot_f32_group)(const float *k, const float *q, size_t stride, int nq, int n, float *out);
    void (*attn_values_f16)(float *out, size_t out_stride, const float *att, size_t att_stride, const uint16_t *v,
                            size_t v_stride, int n_pos, int nq, int n, int accumulate);
    void (*attn_values_f32)(float *out, size_t out_stride, const float *att, size_t att_stride, const float *v,
                            size_t v_stride, int n_pos, int nq, int n, int accumulate);
    void (*dot_q8_0_group)(const slm__block_q8_0 *k, const float *q, size_t stride, int nq, int n, float *out);
    void (*attn_values_q8_0)(float *out, size_t out_stride, const float *att, size_t att_stride,
                             const slm__block_q8_0 *v, size_t v_stride, int n_pos, int nq, int n, int accumulate);
    void (*attn_scores_f16)(float *out, size_t out_stride, const uint16_t *k, size_t k_stride, int n_pos,
                            const float *q, size_t q_stride, int nq, int n);
    void (*attn_scores_f32)(float *out, size_t out_stride, const float *k, size_t k_stride, int n_pos, const float *q,
                            size_t q_stride, int nq, int n);
    void (*attn_scores_q8_0)(float *out, size_t out_stride, const slm__block_q8_0 *k, size_t k_stride, int n_pos,
                             const float *q, size_t q_stride, int nq, int n);
    void (*softmax)(float *x, int n, float div);
    void (*silu_mul)(float *g, const float *u, int n);
    void (*rmsnorm)(float *o, const float *x, const float *weight, int n, float eps);
    void (*fp32_to_fp16_row)(const float *x, uint16_t *y, int n);
};

#if defined(SLM__AVX2)
SLM__DOT_GROUP_GENERIC(slm__dot_f16_group_scalar, uint16_t, slm__dot_f16_ref)
SLM__DOT_GROUP_GENERIC(slm__dot_f32_group_scalar, float, slm__dot_f32_ref)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f16_scalar, uint16_t, slm__axpy_f16_ref)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f32_scalar, float, slm__axpy_f32_ref)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f16_scalar, uint16_t, slm__dot_f16_group_scalar)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f32_scalar, float, slm__dot_f32_group_scalar)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_q8_0_scalar, slm__block_q8_0, slm__dot_q8_0_group_ref)
SLM__TARGET_AVX2_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__GEMM_R16_PAIRS(slm__gemm_r16_pairs_avx2, slm__gemm_r16_nt_avx2, slm__gemm_r16_q5_nt_avx2)
SLM__ATTN_VALUES_Q8_0_BLOCKS(slm__attn_values_q8_0_blocks_avx2, slm__attn_block_q8_0_avx2)
#undef slm_fp16_to_fp32
SLM__TARGET_END
SLM__TARGET_AVX512_BEGIN
#define slm_fp16_to_fp32 SLM__FP16_TO_FP32_SIMD
SLM__ATTN_VALUES_Q8_0_BLOCKS(slm__attn_values_q8_0_blocks_avx512, slm__attn_block_q8_0_avx2)
#undef slm_fp16_to_fp32
SLM__TARGET_END

/* in the order of the table in "config and platform"; best last */
static const slm__kernel_set slm__kernel_sets[3] = {
    { "scalar",
      slm__dot_f32_ref,
      slm__dot_f16_ref,
      slm__dot_bf16_ref,
      slm__dotn_q8_0_ref,
      slm__dotn_q4_0_ref,
      slm__dotm_q5_0_ref,
      slm__dotm_q5_1_ref,
      slm__dotm_q4_K_ref,
      slm__dotm_q5_K_ref,
      slm__dotm_q6_K_ref,
      NULL,
      NULL,
      NULL,
      slm__gemm_r16_ref,
      slm__quantize_act_blocks_ref,
      slm__quantize_q8_K,
      slm__axpy_f32_ref,
      slm__axpy_f16_ref,
      slm__dot_f16_group_scalar,
      slm__dot_f32_group_scalar,
      slm__attn_values_f16_scalar,
      slm__attn_values_f32_scalar,
      slm__dot_q8_0_group_ref,
      slm__attn_values_q8_0_ref,
      slm__attn_scores_f16_scalar,
      slm__attn_scores_f32_scalar,
      slm__attn_scores_q8_0_scalar,
      slm__softmax_ref,
      slm__silu_mul_ref,
      slm__rmsnorm_ref,
      slm__fp32_to_fp16_row_ref },
    { "avx2",
      slm__dot_f32_avx2,
      slm__dot_f16_avx2,
      slm__dot_bf16_avx2,
      slm__dotn_q8_0_avx2,
      slm__dotn_q4_0_avx2,
      slm__dotm_q5_0_avx2,
      slm__dotm_q5_1_avx2,
      slm__dotm_q4_K_avx2,
      slm__dotm_q5_K_avx2,
      slm__dotm_q6_K_avx2,
      NULL,
      NULL,
      NULL,
      slm__gemm_r16_pairs_avx2,
      slm__quantize_act_blocks_avx2,
      slm__quantize_q8_K,
      slm__axpy_f32_avx2,
      slm__axpy_f16_avx2,
      slm__dot_f16_group_avx2,
      slm__dot_f32_group_avx2,
      slm__attn_values_f16_avx2,
      slm__attn_values_f32_avx2,
      slm__dot_q8_0_group_avx2,
      slm__attn_values_q8_0_blocks_avx2,
      slm__attn_scores_f16_avx2,
      slm__attn_scores_f32_avx2,
      slm__attn_scores_q8_0_avx2,
      slm__softmax_avx2,
      slm__silu_mul_avx2,
      slm__rmsnorm_avx2,
      slm__fp32_to_fp16_row_avx2 },
    { "avx512-vnni",
      slm__dot_f32_avx512,
      slm__dot_f16_avx512,
      slm__dot_bf16_avx512,
      slm__dotn_q8_0_avx512,
      slm__dotn_q4_0_avx512,
      slm__dotm_q5_0_avx512,
      slm__dotm_q5_1_avx512,
      slm__dotm_q4_K_avx512,
      slm__dotm_q5_K_avx512,
      slm__dotm_q6_K_avx512,
      slm__dotr_q4_K_avx512vnni,
      slm__dotr_q6_K_avx512vnni,
      slm__gemm_q4_K_avx512vnni,
      slm__gemm_r16_avx512vnni,
      slm__quantize_act_blocks_avx2,
      slm__quantize_q8_K_avx512,
      slm__axpy_f32_avx2,
      slm__axpy_f16_avx2,
      slm__dot_f16_group_avx512,
      slm__dot_f32_group_avx512,
      slm__attn_values_f16_avx512,
      slm__attn_values_f32_avx512,
      slm__dot_q8_0_group_avx2,
      slm__attn_values_q8_0_blocks_avx512,
      slm__attn_scores_f16_avx512,
      slm__attn_scores_f32_avx512,
      slm__attn_scores_q8_0_avx2,
      slm__softmax_avx512,
      slm__silu_mul_avx512,
      slm__rmsnorm_avx512,
      slm__fp32_to_fp16_row_avx512 },
};

static int slm__kernel_set_of_this_cpu(void) {
    unsigned a, b, c, d, leaf1_ecx = 0, leaf7_ebx = 0, leaf7_ecx = 0;
    uint64_t xcr0 = 0;
    if (__get_cpuid(1, &a, &b, &c, &d)) leaf1_ecx = c;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        leaf7_ebx = b;
        leaf7_ecx = c;
    }
    if ((leaf1_ecx >> 27) & 1) { /* OSXSAVE: XGETBV may run */
        unsigned lo, hi;
        __asm__ __volatile__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = ((uint64_t)hi << 32) | lo;
    }
    return slm__kernel_set_for_cpu(leaf1_ecx, leaf7_ebx, leaf7_ecx, xcr0);
}

#else /* aarch64 */
/* the float kernels are the same in both sets (no dot products in them) */
SLM__DOT_GROUP_GENERIC(slm__dot_f16_group_neon, uint16_t, slm__dot_f16_neon)
SLM__DOT_GROUP_GENERIC(slm__dot_f32_group_neon, float, slm__dot_f32_neon)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f16_neon, uint16_t, slm__axpy_f16_neon)
SLM__ATTN_VALUES_GENERIC(slm__attn_values_f32_neon, float, slm__axpy_f32_neon)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f16_neon, uint16_t, slm__dot_f16_group_neon)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_f32_neon, float, slm__dot_f32_group_neon)
SLM__ATTN_SCORES_GENERIC(slm__attn_scores_q8_0_neon, slm__block_q8_0, slm__dot_q8_0_group_neon)
SLM__ATTN_VALUES_Q8_0_BLOCKS(slm__attn_values_q8_0_blocks_neon, slm__attn_block_q8_0_neon)
SLM__GEMM_R16_PAIRS(slm__gemm_r16_pairs_neon, slm__gemm_r16_nt_neon, slm__gemm_r16_q5_nt_neon)
SLM__TARGET_DOTPROD_BEGIN
SLM__GEMM_R16_PAIRS(slm__gemm_r16_pairs_dotprod, slm__gemm_r16_nt_dotprod, slm__gemm_r16_q5_nt_dotprod)
SLM__TARGET_END

/* in the order of the table in "config and platform"; best last */
static const slm__kernel_set slm__kernel_sets[2] = {
    { "neon",
      slm__dot_f32_neon,
      slm__dot_f16_neon,
      slm__dot_bf16_neon,
      slm__dotn_q8_0_neon,
      slm__dotn_q4_0_neon,
      slm__dotm_q5_0_neon,
      slm__dotm_q5_1_neon,
      slm__dotm_q4_K_neon,
      slm__dotm_q5_K_neon,
      slm__dotm_q6_K_neon,
      NULL,
      NULL,
      NULL,
      slm__gemm_r16_pairs_neon,
      slm__quantize_act_blocks_ref,
      slm__quantize_q8_K,
      slm__axpy_f32_neon,
      slm__axpy_f16_neon,
      slm__dot_f16_group_neon,
      slm__dot_f32_group_neon,
      slm__attn_values_f16_neon,
      slm__attn_values_f32_neon,
      slm__dot_q8_0_group_neon,
      slm__attn_values_q8_0_blocks_neon,
      slm__attn_scores_f16_neon,
      slm__attn_scores_f32_neon,
      slm__attn_scores_q8_0_neon,
      slm__softmax_neon,
      slm__silu_mul_neon,
      slm__rmsnorm_neon,
      slm__fp32_to_fp16_row_neon },
    { "neon-dotprod",
      slm__dot_f32_neon,
      slm__dot_f16_neon,
      slm__dot_bf16_neon,
      slm__dotn_q8_0_dotprod,
      slm__dotn_q4_0_dotprod,
      slm__dotm_q5_0_dotprod,
      slm__dotm_q5_1_dotprod,
      slm__dotm_q4_K_dotprod,
      slm__dotm_q5_K_dotprod,
      slm__dotm_q6_K_dotprod,
      NULL,
      NULL,
      NULL,
      slm__gemm_r16_pairs_dotprod,
      slm__quantize_act_blocks_ref,
      slm__quantize_q8_K,
      slm__axpy_f32_neon,
      slm__axpy_f16_neon,
      slm__dot_f16_group_neon,
      slm__dot_f32_group_neon,
      slm__attn_values_f16_neon,
      slm__attn_values_f32_neon,
      slm__dot_q8_0_group_neon,
      slm__attn_values_q8_0_blocks_neon,
      slm__attn_scores_f16_neon,
      slm__attn_scores_f32_neon,
      slm__attn_scores_q8_0_neon,
      slm__softmax_neon,
      slm__silu_mul_neon,
      slm__rmsnorm_neon,
      slm__fp32_to_fp16_row_neon },
};

/* Linux and Android: the kernel's hwcaps; Apple: the dot product is a
   feature sysctl reports (every Apple arm64 CPU so far has it); elsewhere
   NEON only, as nothing this library can ask says more. */
static int slm__kernel_set_of_this_cpu(void) {
#if defined(__linux__)
    return slm__kernel_set_for_hwcap((uint64_t)getauxval(AT_HWCAP));
#elif defined(__APPLE__)
    int has = 0;
    size_t size = sizeof has;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &size, NULL, 0) == 0 && has ? 1 : 0;
#else
    return 0;
#endif
}
#endif
#define SLM__KERNEL_SETS (int)(sizeof slm__kernel_sets / sizeof slm__kernel_sets[0])

/* Computed once per process; racing first calls compute the same value. */
static const slm__kernel_set *slm__kernels_best(void) {
    static int best = -1;
    int i = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (i < 0) {
        i = slm__kernel_set_of_this_cpu();
        __atomic_store_n(&best, i, __ATOMIC_RELAXED);
    }
    return &slm__kernel_sets[i];
}
#endif

/* The kernels a model loaded with desc.kernels = want runs (slm_model_load):
   0 with *name set, 1 for a name this build does not have, 2 for a set this
   CPU cannot run. */
static int slm__kernels_choose(const char *want, const char **name, const void **set) {
#if defined(SLM__DISPATCH)
    int i, best = (int)(slm__kernels_best() - slm__kernel_sets);
    if (!want || !*want)
        i = best;
    else {
        for (i = 0; i < SLM__KERNEL_SETS; i++)
            if (!strcmp(want, slm__kernel_sets[i].name)) break;
        if (i == SLM__KERNEL_SETS) return 1;
        if (i > best) return 2;
    }
    *name = slm__kernel_sets[i].name;
    *set = &slm__kernel_sets[i];
    return 0;
#else
    *name = SLM__SIMD_NAME;
    *set = NULL;
    return want && *want && strcmp(want, SLM__SIMD_NAME) ? 1 : 0;
#endif
}

static float slm__dot_q8_0(const slm__block_q8_0 *w, const slm__block_q8_0 *x, int n_blocks) {
    float out;
    slm__dotn_q8_0(&w, 1, x, n_blocks, &out);
    return out;
}
static float slm__dot_q4_0(const slm__block_q4_0 *w, const slm__block_q8_0 *x, int n_blocks) {
    float out;
    slm__dotn_q4_0(&w, 1, x, n_blocks, &out);
    return out;
}

/* Outputs row..row+nr-1 (nr <= 4) of W x for one token's activations (x, or
   xq for quantized weights). */
static void slm__rows_dot(const slm__tensor *w, int row, int nr, const float *x, const slm__block_q8_0 *xq,
                          float *out) {
    const uint8_t *base = (const uint8_t *)w->data + (size_t)row * w->row_size;
    int n = (int)w->ne[0], i;
    if (w->type == SLM_TYPE_Q8_0 || w->type == SLM_TYPE_Q4_0) {
        const void *rows[4];
        for (i = 0; i < nr; i++) rows[i] = base + (size_t)i * w->row_size;
        if (w->type == SLM_TYPE_Q8_0) {
            if (nr == 4)
                slm__dotn_q8_0((const slm__block_q8_0 *const *)rows, 4, xq, n / SLM__QK, out);
            else
                for (i = 0; i < nr; i++) out[i] = slm__dot_q8_0((const slm__block_q8_0 *)rows[i], xq, n / SLM__QK);
        } else {
            if (nr == 4)
                slm__dotn_q4_0((const slm__block_q4_0 *const *)rows, 4, xq, n / SLM__QK, out);
            else
                for (i = 0; i < nr; i++) out[i] = slm__dot_q4_0((const slm__block_q4_0 *)rows[i], xq, n / SLM__QK);
        }
        return;
    }
    for (i = 0; i < nr; i++) {
        const uint8_t *r = base + (size_t)i * w->row_size;
        switch (w->type) {
        case SLM_TYPE_F32: out[i] = slm__dot_f32((const float *)r, x, n); break;
        case SLM_TYPE_F16: out[i] = slm__dot_f16((const uint16_t *)r, x, n); break;
        case SLM_TYPE_BF16: out[i] = slm__dot_bf16((const uint16_t *)r, x, n); break;
        default: out[i] = 0.0f; break;
        }
    }
}

static int slm__type_is_quantized(int type) {
    type = slm__block_type(type);
    return type != SLM_TYPE_F32 && type != SLM_TYPE_F16 && type != SLM_TYPE_BF16;
}

/* y[t][r] (or += with accumulate) for rows r0..r1 of w and n_tok tokens. Rows
   go in groups of four: each group's weights are read from memory once and
   reused from cache by every token of the batch. */
static void slm__matmul(const slm__tensor *w, int r0, int r1, const float *x, size_t x_stride,
                        const slm__block_q8_0 *xq, const int32_t *xsum, size_t xq_stride, const slm__block_q8_K *xk,
                        size_t xk_stride, int n_tok, float *y, size_t y_stride, int accumulate) {
    int r, t, i;
    if (slm__type_is_r16(w->type)) {
        /* whole groups of 16 rows, SLM__R16_TILE tokens at a time (what the
           kernel table's slm__gemm_r16 takes in one pass, or more); a group
           cut by r0 or r1 (a stack of matrices whose sizes are not multiples
           of 16) is computed whole and stored in part */
        int nb = (int)(w->ne[0] / SLM__QK), g;
        for (g = r0 / SLM__R16; g * SLM__R16 < r1; g++) {
            const uint8_t *group = (const uint8_t *)w->data + (size_t)g * SLM__R16 * w->row_size;
            int lo = SLM__MAX(r0 - g * SLM__R16, 0), hi = SLM__MIN(r1 - g * SLM__R16, SLM__R16);
            for (t = 0; t < n_tok; t += SLM__R16_TILE) {
                float d[SLM__R16_TILE * SLM__R16];
                int nt = SLM__MIN(SLM__R16_TILE, n_tok - t), tt;
                slm__gemm_r16(w->type, group, nb, xq + (size_t)t * xq_stride, xsum + (size_t)t * xq_stride, xq_stride,
                              nt, d, SLM__R16);
                for (tt = 0; tt < nt; tt++) {
                    float *yt = y + (size_t)(t + tt) * y_stride + g * SLM__R16;
                    if (accumulate)
                        for (i = lo; i < hi; i++) yt[i] += d[tt * SLM__R16 + i];
                    else
                        for (i = lo; i < hi; i++) yt[i] = d[tt * SLM__R16 + i];
                }
            }
        }
        return;
    }
#if defined(slm__gemm_q4_K)
    if (w->type == SLM_TYPE_Q4_K && SLM__GEMM_Q4_K && n_tok >= SLM__KQ_GEMM_MIN) {
        /* groups of 16 rows against the batch; rows after the last whole
           group (a stack of matrices whose sizes are not multiples of 16)
           go to the row groups below, whose sums have the same bits */
        int n_super = (int)(w->ne[0] / SLM__QK_K);
        for (r = r0; r + 16 <= r1; r += 16) {
            const uint8_t *rows = (const uint8_t *)w->data + (size_t)r * w->row_size;
            for (t = 0; t < n_tok; t += SLM__KQ_GEMM_TOK) {
                float d[SLM__KQ_GEMM_TOK * 16];
                int nt = SLM__MIN(SLM__KQ_GEMM_TOK, n_tok - t), tt;
                slm__gemm_q4_K(rows, w->row_size, n_super, xk + (size_t)t * xk_stride, xk_stride, nt, d);
                for (tt = 0; tt < nt; tt++) {
                    float *yt = y + (size_t)(t + tt) * y_stride + r;
                    if (accumulate)
                        for (i = 0; i < 16; i++) yt[i] += d[16 * tt + i];
                    else
                        for (i = 0; i < 16; i++) yt[i] = d[16 * tt + i];
                }
            }
        }
        r0 = r;
        if (r0 >= r1) return;
    }
#endif
#if defined(slm__dotr_q4_K)
    if ((w->type == SLM_TYPE_Q4_K || w->type == SLM_TYPE_Q6_K) && SLM__DOTR_K) {
        /* four rows at a time against four tokens at a time: the rows' sums
           are reduced once per group, not per row */
        int n_super = (int)(w->ne[0] / SLM__QK_K), rr;
        for (r = r0; r < r1; r += 4) {
            const uint8_t *rows = (const uint8_t *)w->data + (size_t)r * w->row_size;
            int nr = SLM__MIN(4, r1 - r);
            for (t = 0; t < n_tok; t += 4) {
                float d[16];
                int nt = SLM__MIN(4, n_tok - t);
                const slm__block_q8_K *kt = xk + (size_t)t * xk_stride;
                if (w->type == SLM_TYPE_Q4_K)
                    slm__dotr_q4_K(rows, w->row_size, nr, kt, xk_stride, nt, n_super, d);
                else
                    slm__dotr_q6_K(rows, w->row_size, nr, kt, xk_stride, nt, n_super, d);
                for (i = 0; i < nt; i++) {
                    float *yt = y + (size_t)(t + i) * y_stride + r;
                    for (rr = 0; rr < nr; rr++) yt[rr] = accumulate ? yt[rr] + d[4 * rr + i] : d[4 * rr + i];
                }
            }
        }
        return;
    }
#endif
    if (w->type == SLM_TYPE_Q5_0 || w->type == SLM_TYPE_Q5_1 || w->type == SLM_TYPE_Q4_K || w->type == SLM_TYPE_Q5_K ||
        w->type == SLM_TYPE_Q6_K) {
        /* one row at a time, decoded once for four tokens */
        int nb = (int)(w->ne[0] / SLM__QK), n_super = (int)(w->ne[0] / SLM__QK_K);
        for (r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_size;
            for (t = 0; t < n_tok; t += 4) {
                float d[4];
                int nt = SLM__MIN(4, n_tok - t);
                /* a pass quantizes only what its matrices' types read: the others are NULL */
                const slm__block_q8_0 *xt = xq ? xq + (size_t)t * xq_stride : NULL;
                const int32_t *st = xsum ? xsum + (size_t)t * xq_stride : NULL;
                const slm__block_q8_K *kt = xk ? xk + (size_t)t * xk_stride : NULL;
                switch (w->type) {
                case SLM_TYPE_Q5_0: slm__dotm_q5_0(row, xt, st, xq_stride, nt, nb, d); break;
                case SLM_TYPE_Q5_1: slm__dotm_q5_1(row, xt, st, xq_stride, nt, nb, d); break;
                case SLM_TYPE_Q4_K: slm__dotm_q4_K(row, kt, xk_stride, nt, n_super, d); break;
                case SLM_TYPE_Q5_K: slm__dotm_q5_K(row, kt, xk_stride, nt, n_super, d); break;
                default: slm__dotm_q6_K(row, kt, xk_stride, nt, n_super, d); break;
                }
                for (i = 0; i < nt; i++) {
                    float *yt = y + (size_t)(t + i) * y_stride + r;
                    *yt = accumulate ? *yt + d[i] : d[i];
                }
            }
        }
        return;
    }
    for (r = r0; r < r1; r += 4) {
        int nr = SLM__MIN(4, r1 - r);
        for (t = 0; t < n_tok; t++) {
            float d[4], *yt = y + (size_t)t * y_stride + r;
            slm__rows_dot(w, r, nr, x + (size_t)t * x_stride, xq ? xq + (size_t)t * xq_stride : NULL, d);
            if (accumulate)
                for (i = 0; i < nr; i++) yt[i] += d[i];
            else
                for (i = 0; i < nr; i++) yt[i] = d[i];
        }
    }
}

/* ---- transformer forward pass ---------------------------------------------
   Owns the session: KV cache, activation buffers, and the pass over a batch
   of tokens: embedding -> n_layers x (RMSNorm, q/k/v with optional bias and
   q/k norm, RoPE, grouped-query causal attention, output projection, RMSNorm,
   SwiGLU) -> final RMSNorm -> logits of the last token (of every token in a
   branch batch, whose tokens sit in a tree after the cached prefix and attend
   along their own paths). The whole pass is one parallel region: every step
   splits its work (rows of a matrix, tokens, heads) by thread index and ends
   at a barrier, so threads start once per call, not once per operation, and
   each output is computed by the same code whatever the thread count. Elementwise arithmetic follows llama2.c's run.c.
   All buffers are allocated in slm_session_new; nothing is allocated per
   token. */

#define SLM__BATCH 64 /* tokens per pass of slm_eval: enough to reuse each weight row from cache */
/* n_threads is cut to this: more cores than the devices we target have, and
   it bounds the per-thread attention scratch (n_threads x n_ctx floats) */
#define SLM__MAX_THREADS 512
#define SLM__CACHE_LINE  64
/* Multiply-adds a pass must have per thread before it takes one more thread
   (default 4M: below that, the barriers cost more than the thread saves).
   Internal, overridden with -D: tests/extended.sh builds with 1u so that
   even stories260K's tiny passes run on every thread, which tests the work
   split and the barriers (results must stay bit-identical). */
#ifndef SLM__WORK_PER_THREAD
#define SLM__WORK_PER_THREAD 4000000u
#endif

typedef struct slm__cand {
    float logit;
    slm_token id;
} slm__cand; /* sampler scratch */
typedef struct slm__step {
    long next, done;
    char pad[SLM__CACHE_LINE - 2 * sizeof(long)];
} slm__step; /* one pass step's work counters, own cache line */

/* What a pass computes, set before it starts (pool threads read it). A plain
   pass (slm_eval, slm_generate) appends tokens at slots n_past..; a branch
   pass makes nodes node0.. of the branch tree, whose positions and ancestors
   come from the session's node tables. */
typedef struct slm__pass {
    const slm_token *tokens;
    int n;
    int node0;     /* -1: a plain pass; else the node id of tokens[0] */
    float *logits; /* rows of n_vocab logits for the last n_logits tokens */
    int n_logits;  /* 0: none */
} slm__pass;

/* Slots [start, start + len) of the KV cache, attended in this order. */
typedef struct slm__run {
    int start, len;
} slm__run;

struct slm_session {
    const slm_model *model;
    slm_allocator alloc;
    int n_ctx, n_threads, kv_type, n_past, logits_valid, n_batch;
    int kv_dim, q_dim, xq_blocks, xk_blocks;
    slm_token *tokens;                   /* what the KV cache holds, n_ctx */
    float *x, *xn, *q, *k, *v, *ao, *hb; /* [n_batch][width] */
    float *att;                          /* [n_threads][att_rows][n_ctx] attention scores */
    int att_chunks, att_rows;            /* chunks of <= SLM__GROUP query heads per KV head, heads per chunk */
    float *rope_cs;                      /* [n_batch][head_dim/2][2] cos, sin */
    float *logits;
    slm__block_q8_0 *xq;           /* [n_batch][xq_blocks] activations quantized for q8_0/q4_0 weights */
    int32_t *xq_sum;               /* [n_batch][xq_blocks] sum of each block's quants, for the _R16 kernels */
    slm__block_q8_K *xk;           /* [n_batch][xk_blocks] activations for K-quant weights; NULL without them */
    void *key_cache, *value_cache; /* [layer][pos][kv head] rows of kv_head_bytes: head_dim f32, f16 or q8_0 blocks */
    size_t kv_head_bytes;
    float *rope_freq;
    slm__step *steps; /* work counters of one pass's steps */
    int n_steps;
    slm__pass pass; /* written only while no pool thread works */
    /* The branch tree (slm_eval_branches): node j's KV entries at slot
       n_past + j, its token at tokens[n_past + j]. Nodes sit in slots after
       their parents, so a chain of nodes made one after the other is one run
       of slots: node_run[j] is the first slot of the run that ends at j
       (0 when it reaches back through node 0 into the prefix). */
    int n_nodes;
    int *node_parent, *node_depth, *node_run; /* [n_ctx] each */
    slm__run *runs;                           /* [n_threads][n_ctx + 1] a token's runs, per thread */
    int64_t n_evaluated, n_passes;            /* slm_gen_stats' counters, out of slm_generate's reset */
    size_t bytes, max_bytes;                  /* what slm_session_new allocated, desc.max_bytes (0: no cap) */
    float *kept_logits;                       /* slm_eval_logprobs' keep_logits: n_kept rows of n_vocab */
    int n_kept;
#ifdef SLM__POOL
    slm__thread *pool; /* n_threads - 1 threads; the caller is the first of the team */
    struct slm__pool_member *pool_members;
    int pool_size, pool_sync_ok;
    slm__mutex pool_mu; /* only to sleep: every condition below is an atomic */
    slm__cond pool_cv;  /* one for all waits (pass start, step end, pass end): few threads sleep at once */
    /* atomics: pass number << 10 | team size, in one word so that a thread
       outside the team never reads a team size being written for the next pass */
    unsigned pool_job;
    int pool_running, pool_quit, pool_sleepers;
#endif
    slm__cand *cand;
    struct slm__suggest *suggest; /* slm_suggest's state (predictive text), made by its first call */
    struct slm__gm_trie *gtrie;   /* the vocabulary as a trie for grammars, made by the first call with one */
    uint64_t rng;
    slm_gen_stats stats;
    slm_token gen_last; /* the last token the generation loop sampled (not evaluated), -1 when none */
    char error[SLM__MSG_MAX];
};

static void slm__sug_free(const slm_allocator *a, struct slm__suggest *g);
static void slm__gm_trie_free(const slm_allocator *a, struct slm__gm_trie *t);

static slm_result slm__fail(slm_session *s, slm_result code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    slm__vformat(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
    slm__log(s->model->log, s->model->log_user, SLM_LOG_ERROR, "%s", s->error);
    return code;
}

static void slm__add_bias(float *x, const slm__tensor *b, int offset, int n) {
    const float *bias = (const float *)b->data + offset;
    int i;
    for (i = 0; i < n; i++) x[i] += bias[i];
}

static void slm__rope_head(const slm_session *s, float *v, const float *cs) {
    const slm_model_info *in = &s->model->info;
    int half = in->head_dim / 2, i;
    int stride = in->rope_kind == 1 ? half : 1; /* partner of element a: a+half (NeoX) or a+1 */
    for (i = 0; i < half; i++) {
        int a = in->rope_kind == 1 ? i : 2 * i;
        float v0 = v[a], v1 = v[a + stride], c = cs[2 * i], sn = cs[2 * i + 1];
        v[a] = v0 * c - v1 * sn;
        v[a + stride] = v0 * sn + v1 * c;
    }
}

/* KV head kh of a position; a q8_0 head row is ceil(head_dim / 32) blocks
   of its own (the last one partial when head_dim is not a multiple of 32),
   so each head is quantized and read on its own, by whichever thread has it. */
static void *slm__kv_at(const slm_session *s, void *cache, int layer, int pos, int kh) {
    return (uint8_t *)cache + (((size_t)layer * s->n_ctx + pos) * s->model->info.n_kv_heads + kh) * s->kv_head_bytes;
}

/* Work sharing. Each step of a pass is a list of items (tokens, chunks of
   rows, heads) that threads claim from the step's counter; a thread then
   waits for the step's items to be done, not for the other threads to arrive,
   so a thread the OS has set aside (another app on the core) does not stall
   the rest: whoever runs takes the work. */
/* Sequentially consistent: a thread that goes to sleep after reading a
   counter and the thread that adds to it then reads the number of sleepers
   must not both miss the other's write (slm__pool_wait). */
#if defined(__GNUC__) || defined(__clang__)
#define SLM__ATOMIC_ADD(p, v)   __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define SLM__ATOMIC_SUB(p, v)   __atomic_sub_fetch((p), (v), __ATOMIC_SEQ_CST) /* the new value */
#define SLM__ATOMIC_LOAD(p)     __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define SLM__ATOMIC_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#elif defined(_MSC_VER)
/* long, int and unsigned have 32 bits on Windows: every atomic here is one of them */
#include <intrin.h>
#define SLM__ATOMIC_ADD(p, v)   _InterlockedExchangeAdd((volatile long *)(p), (long)(v))
#define SLM__ATOMIC_SUB(p, v)   (_InterlockedExchangeAdd((volatile long *)(p), -(long)(v)) - (long)(v))
#define SLM__ATOMIC_LOAD(p)     _InterlockedOr((volatile long *)(p), 0)
#define SLM__ATOMIC_STORE(p, v) ((void)_InterlockedExchange((volatile long *)(p), (long)(v)))
#else
#undef SLM__THREADS /* no atomics known for this compiler: one thread */
#undef SLM__POOL
#endif

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define SLM__CPU_RELAX() __builtin_ia32_pause()
#elif defined(_M_X64) || defined(_M_IX86)
#define SLM__CPU_RELAX() _mm_pause()
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define SLM__CPU_RELAX() __asm__ __volatile__("yield")
#else
#define SLM__CPU_RELAX() ((void)0)
#endif

#ifdef SLM__POOL
/* The pool's waiting policy. A waiting thread spins for SLM__SPINS pauses
   (about 70 us on a Zen 5 core at 67 ns a pause, less on cores with a shorter
   pause), long enough for a partner that runs to finish its item, then
   sleeps on the session's condition variable. A sleeping thread leaves its
   core to a partner the OS had set aside (another process on the partner's
   core): the kernel can move the partner there, so the pass goes on instead of
   waiting a time slice. Spinning costs at most SLM__SPINS pauses per wait
   when a core is shared; sleeping costs a wake-up (a few us of the waker and
   the sleeper's wake-up latency), paid only by waits longer than the spin. */
#ifndef SLM__SPINS
#define SLM__SPINS 1024
#endif
typedef int (*slm__pool_ready_fn)(const slm_session *s, const void *p, long v);

/* Returns once ready(s, p, v), which reads atomics only. */
static void slm__pool_wait(slm_session *s, slm__pool_ready_fn ready, const void *p, long v) {
    int spins;
    for (spins = 0; spins < SLM__SPINS; spins++) {
        if (ready(s, p, v)) return;
        SLM__CPU_RELAX();
    }
    slm__mutex_lock(&s->pool_mu);
    SLM__ATOMIC_ADD(&s->pool_sleepers, 1);
    while (!ready(s, p, v)) slm__cond_wait(&s->pool_cv, &s->pool_mu);
    SLM__ATOMIC_SUB(&s->pool_sleepers, 1);
    slm__mutex_unlock(&s->pool_mu);
}

/* Called after a sequentially consistent write that may have made a
   sleeper's condition true; costs a shared read when nobody sleeps. */
static void slm__pool_wake(slm_session *s) {
    if (SLM__ATOMIC_LOAD(&s->pool_sleepers)) {
        slm__mutex_lock(&s->pool_mu);
        slm__cond_broadcast(&s->pool_cv);
        slm__mutex_unlock(&s->pool_mu);
    }
}
#endif

typedef struct slm__worker {
    slm_session *s;
    int nth, step;
    long local, claimed; /* single thread: the item counter; several: items this thread did */
} slm__worker;

static long slm__next_item(slm__worker *w, long n) {
    long i;
#ifdef SLM__THREADS
    if (w->nth > 1)
        i = SLM__ATOMIC_ADD(&w->s->steps[w->step].next, 1L);
    else
#endif
        i = w->local++;
    if (i >= n) return -1;
    w->claimed++;
    return i;
}

#ifdef SLM__POOL
static int slm__pool_step_ready(const slm_session *s, const void *done, long n) {
    (void)s;
    return SLM__ATOMIC_LOAD((const long *)done) >= n;
}
#endif

/* Ends a step of n items: returns once all of them are done, by any thread. */
static void slm__step_done(slm__worker *w, long n) {
#ifdef SLM__POOL
    if (w->nth > 1) {
        slm__step *st = &w->s->steps[w->step];
        if (w->claimed && SLM__ATOMIC_ADD(&st->done, w->claimed) + w->claimed >= n) slm__pool_wake(w->s);
        slm__pool_wait(w->s, slm__pool_step_ready, &st->done, n);
    }
#elif defined(SLM__THREADS)
    if (w->nth > 1) {
        slm__step *st = &w->s->steps[w->step];
        int spins = 0;
        if (w->claimed) SLM__ATOMIC_ADD(&st->done, w->claimed);
        while (SLM__ATOMIC_LOAD(&st->done) < n) {
            if (++spins < 2000) {
                SLM__CPU_RELAX();
            } else {
#if defined(SLM__MMAP_POSIX)
                sched_yield(); /* another process has the core: let it finish */
#elif defined(SLM__MMAP_WIN32)
                SwitchToThread();
#endif
            }
        }
    }
#else
    (void)n;
#endif
    w->step++;
    w->claimed = 0;
    w->local = 0;
}

#define SLM__FOR_ITEMS(w, i, n) for ((i) = slm__next_item((w), (n)); (i) >= 0; (i) = slm__next_item((w), (n)))
#define SLM__ROWS_PER_ITEM      16

/* Token t's activations x[0..n) as q8_0 blocks, with each block's sum of
   quants for the interleaved kernels; and as q8_K blocks when the model has
   K-quant matrices (s->xk) and n is a multiple of 256, as theirs are. */
static void slm__quantize_act(slm_session *s, const float *x, int t, int n) {
    slm__quantize_act_blocks(x, s->xq + (size_t)t * s->xq_blocks, s->xq_sum + (size_t)t * s->xq_blocks, n);
    if (s->xk && n % SLM__QK_K == 0) slm__quantize_act_q8_K(x, s->xk + (size_t)t * s->xk_blocks, n);
}

/* Rows [a, b) of the stacked matrices w[0..count) (each w[i]->ne[1] rows) over the batch. */
static void slm__matmul_stacked(const slm_session *s, const slm__tensor *const *w, float *const *y, const int *y_stride,
                                int count, int a, int b, const float *x, size_t x_stride, int n_tok, int accumulate) {
    int i, off = 0;
    for (i = 0; i < count; i++) {
        int rows = (int)w[i]->ne[1], lo = SLM__MAX(a - off, 0), hi = SLM__MIN(b - off, rows);
        if (lo < hi)
            slm__matmul(w[i], lo, hi, x, x_stride, slm__type_is_quantized(w[i]->type) ? s->xq : NULL, s->xq_sum,
                        (size_t)s->xq_blocks, s->xk, (size_t)s->xk_blocks, n_tok, y[i], (size_t)y_stride[i],
                        accumulate);
        off += rows;
    }
}

/* KV slot and position (RoPE) of token t of the pass: n_past + t in a plain
   pass; a node's slot is n_past + its id, its position n_past + its depth. */
static int slm__pass_slot(const slm_session *s, int t) {
    return s->n_past + (s->pass.node0 < 0 ? t : s->pass.node0 + t);
}
static int slm__pass_pos(const slm_session *s, int t) {
    return s->n_past + (s->pass.node0 < 0 ? t : s->node_depth[s->pass.node0 + t]);
}

/* The slots node attends to, in order: the prefix, then its ancestors' and
   its own, root first, as runs of consecutive slots (at most its depth + 2).
   The walk up the tree meets the runs last first, so it counts them, then
   fills them from the end. */
static int slm__node_runs(const slm_session *s, int node, slm__run *runs) {
    int n = 0, i, x, first = 0;
    for (x = node; x >= 0; x = first > 0 ? s->node_parent[first - s->n_past] : -1) {
        first = s->node_run[x];
        n++;
    }
    if (first > 0 && s->n_past > 0) n++; /* the root's run starts after the prefix, a run of its own */
    runs[0].start = 0;
    runs[0].len = s->n_past;
    for (x = node, i = n; x >= 0; x = first > 0 ? s->node_parent[first - s->n_past] : -1) {
        first = s->node_run[x];
        i--;
        runs[i].start = first;
        runs[i].len = s->n_past + x + 1 - first;
    }
    return n;
}

/* The most tokens a pass has for slm__attend to fetch the KV rows ahead,
   and the positions it scores per kernel call (and fetches ahead). */
#define SLM__KV_AHEAD    8
#define SLM__SCORES_TILE 16

static void slm__prefetch_bytes(const void *p, size_t n) {
#if defined(__GNUC__) || defined(__clang__)
    size_t i;
    for (i = 0; i < n; i += 64) __builtin_prefetch((const char *)p + i);
#else
    (void)p;
    (void)n;
#endif
}

/* Token t's attention for query heads h0..h0+nh-1 (nh <= SLM__GROUP), which
   share one KV head; att holds nh rows of n_ctx scores, runs room for a
   node's runs. The scores of the attended slots sit side by side in att and
   the softmax runs over them as over a contiguous row; the value sums go
   run after run, each on from the last (accumulate), so a node's result is
   bit for bit that of a plain pass over its path. */
static void slm__attend(slm_session *s, int layer, int t, int h0, int nh, float *att, slm__run *runs) {
    const slm_model_info *in = &s->model->info;
    int hd = in->head_dim, p, h, r, n_runs, n_att = 0;
    const float *q = s->q + (size_t)t * s->q_dim + (size_t)h0 * hd;
    float *out = s->ao + (size_t)t * s->q_dim + (size_t)h0 * hd, scale = sqrtf((float)hd);
    int kh = h0 / (in->n_heads / in->n_kv_heads);
    size_t kv_stride = (size_t)in->n_kv_heads * s->kv_head_bytes; /* bytes from one position to the next */
    int prefetch_kv = s->pass.n <= SLM__KV_AHEAD, tile = prefetch_kv ? SLM__SCORES_TILE : s->n_ctx;
    if (s->pass.node0 < 0) {
        runs[0].start = 0; /* a plain pass: every slot up to the token's own */
        runs[0].len = s->n_past + t + 1;
        n_runs = 1;
    } else {
        n_runs = slm__node_runs(s, s->pass.node0 + t, runs);
    }
    /* the scores of each run, in one call or (fetching ahead)
       SLM__SCORES_TILE positions per call: the kernels score positions
       together, each as it would be alone */
    for (r = 0; r < n_runs; r++)
        for (p = runs[r].start; p < runs[r].start + runs[r].len; p += tile) {
            int cnt = SLM__MIN(tile, runs[r].start + runs[r].len - p);
            const void *key = slm__kv_at(s, s->key_cache, layer, p, kh);
            float *sc = att + n_att; /* / scale in the softmax */
            /* a pass of a few tokens (decode) finds a layer's KV rows, lines
               scattered by the heads between them, pushed out of the caches
               by the weights streaming by: the next tile's keys and this
               tile's values (for the sums below) are fetched while the
               scores are computed (1.04-1.15x decode on Zen 5; a long
               prompt reads them again for each token, from the caches) */
            if (prefetch_kv) {
                int i, end = SLM__MIN(runs[r].start + runs[r].len, p + cnt + SLM__SCORES_TILE);
                for (i = p + cnt; i < end; i++)
                    slm__prefetch_bytes(slm__kv_at(s, s->key_cache, layer, i, kh), s->kv_head_bytes);
                for (i = p; i < p + cnt; i++)
                    slm__prefetch_bytes(slm__kv_at(s, s->value_cache, layer, i, kh), s->kv_head_bytes);
            }
            if (s->kv_type == SLM_TYPE_F32)
                slm__attn_scores_f32(sc, (size_t)s->n_ctx, (const float *)key, kv_stride / sizeof(float), cnt, q,
                                     (size_t)hd, nh, hd);
            else if (s->kv_type == SLM_TYPE_F16)
                slm__attn_scores_f16(sc, (size_t)s->n_ctx, (const uint16_t *)key, kv_stride / sizeof(uint16_t), cnt, q,
                                     (size_t)hd, nh, hd);
            else
                slm__attn_scores_q8_0(sc, (size_t)s->n_ctx, (const slm__block_q8_0 *)key,
                                      kv_stride / sizeof(slm__block_q8_0), cnt, q, (size_t)hd, nh, hd);
            n_att += cnt;
        }
    for (h = 0; h < nh; h++) slm__softmax(att + (size_t)h * s->n_ctx, n_att, scale);
    for (r = 0, n_att = 0; r < n_runs; n_att += runs[r].len, r++) {
        const uint8_t *values = (const uint8_t *)slm__kv_at(s, s->value_cache, layer, runs[r].start, kh);
        if (s->kv_type == SLM_TYPE_F32)
            slm__attn_values_f32(out, (size_t)hd, att + n_att, (size_t)s->n_ctx, (const float *)values,
                                 kv_stride / sizeof(float), runs[r].len, nh, hd, r > 0);
        else if (s->kv_type == SLM_TYPE_F16)
            slm__attn_values_f16(out, (size_t)hd, att + n_att, (size_t)s->n_ctx, (const uint16_t *)values,
                                 kv_stride / sizeof(uint16_t), runs[r].len, nh, hd, r > 0);
        else
            slm__attn_values_q8_0(out, (size_t)hd, att + n_att, (size_t)s->n_ctx, (const slm__block_q8_0 *)values,
                                  kv_stride / sizeof(slm__block_q8_0), runs[r].len, nh, hd, r > 0);
    }
}

/* Rows [16 i, 16 i + 16) of matrices w[0..count) stacked on top of each other. */
static void slm__matmul_item(const slm_session *s, long item, int per, const slm__tensor *const *w, float *const *y,
                             const int *y_stride, int count, const float *x, size_t x_stride, int n_tok,
                             int accumulate) {
    int a = (int)item * per;
    slm__matmul_stacked(s, w, y, y_stride, count, a, a + per, x, x_stride, n_tok, accumulate);
}

/* Rows per work item of a matrix step: about eight items per thread, so
   that threads seldom touch the shared counter yet can still even out, in
   whole groups of 16 rows. Any split gives the same results. */
static long slm__row_items(const slm__worker *w, long rows, int *per) {
    long p = rows / ((long)w->nth * 8) / SLM__ROWS_PER_ITEM * SLM__ROWS_PER_ITEM;
    *per = (int)SLM__MAX((long)SLM__ROWS_PER_ITEM, p);
    return (rows + *per - 1) / *per;
}

/* Head h of the pass's q (h < n_heads), k (next n_kv_heads) or v (last
   n_kv_heads) for every token: its rows of the matrix, then bias, norm and
   RoPE, and k and v into the KV cache. */
static void slm__qkv_head(slm_session *s, const slm__layer *L, int layer, int h) {
    const slm_model_info *in = &s->model->info;
    int hd = in->head_dim, dim = in->dim, n = s->pass.n,
        kind = h < in->n_heads                    ? 0
               : h < in->n_heads + in->n_kv_heads ? 1
                                                  : 2;
    int head = kind == 0 ? h : kind == 1 ? h - in->n_heads : h - in->n_heads - in->n_kv_heads, t;
    const slm__tensor *w = kind == 0 ? L->wq : kind == 1 ? L->wk : L->wv;
    const slm__tensor *bias = kind == 0 ? L->bq : kind == 1 ? L->bk : L->bv;
    const slm__tensor *norm = kind == 0 ? L->q_norm : kind == 1 ? L->k_norm : NULL;
    float *y = kind == 0 ? s->q : kind == 1 ? s->k : s->v;
    int y_stride = kind == 0 ? s->q_dim : s->kv_dim;
    slm__matmul(w, head * hd, head * hd + hd, s->xn, (size_t)dim, slm__type_is_quantized(w->type) ? s->xq : NULL,
                s->xq_sum, (size_t)s->xq_blocks, s->xk, (size_t)s->xk_blocks, n, y, (size_t)y_stride, 0);
    for (t = 0; t < n; t++) {
        float *v = y + (size_t)t * y_stride + (size_t)head * hd;
        if (bias) slm__add_bias(v, bias, head * hd, hd);
        if (norm) slm__rmsnorm(v, v, (const float *)norm->data, hd, in->norm_eps);
        if (kind != 2) slm__rope_head(s, v, s->rope_cs + (size_t)t * hd);
        if (kind != 0) {
            void *c = slm__kv_at(s, kind == 1 ? s->key_cache : s->value_cache, layer, slm__pass_slot(s, t), head);
            if (s->kv_type == SLM_TYPE_F32)
                memcpy(c, v, (size_t)hd * sizeof(float));
            else if (s->kv_type == SLM_TYPE_F16)
                slm__fp32_to_fp16_row(v, (uint16_t *)c, hd);
            else
                slm__quantize_kv_q8_0(v, (slm__block_q8_0 *)c, hd);
        }
    }
}

/* Rows the SwiGLU step takes at a time: the up projection of that many rows
   for a whole batch fits a thread's stack and L1 cache. */
#define SLM__FFN_CHUNK 64

/* Rows [a, b) of the feed-forward block's hidden vector for the pass's
   tokens: hb = silu(gate x) * (up x). The up rows never leave this thread
   (a chunk of them at a time on its stack): only hb goes on to the next
   step, so no other core's cache holds lines this one writes (1.01-1.02x
   pp512 on two Zen 5 cores). */
static void slm__ffn_gate_up(slm_session *s, const slm__layer *L, int a, int b) {
    int dim = s->model->info.dim, ffn = s->model->info.ffn_dim, n = s->pass.n, c, t;
    float up[SLM__BATCH * SLM__FFN_CHUNK];
    for (c = a; c < b; c += SLM__FFN_CHUNK) {
        int rows = SLM__MIN(SLM__FFN_CHUNK, b - c);
        slm__tensor up_rows = *L->w_up; /* rows [c, c + rows): c is a multiple of 16, a whole r16 group */
        up_rows.data = (const uint8_t *)L->w_up->data + (size_t)c * L->w_up->row_size;
        up_rows.ne[1] = rows;
        slm__matmul(L->w_gate, c, c + rows, s->xn, (size_t)dim, slm__type_is_quantized(L->w_gate->type) ? s->xq : NULL,
                    s->xq_sum, (size_t)s->xq_blocks, s->xk, (size_t)s->xk_blocks, n, s->hb, (size_t)ffn, 0);
        slm__matmul(&up_rows, 0, rows, s->xn, (size_t)dim, slm__type_is_quantized(up_rows.type) ? s->xq : NULL,
                    s->xq_sum, (size_t)s->xq_blocks, s->xk, (size_t)s->xk_blocks, n, up, SLM__FFN_CHUNK, 0);
        for (t = 0; t < n; t++) slm__silu_mul(s->hb + (size_t)t * ffn + c, up + (size_t)t * SLM__FFN_CHUNK, rows);
    }
}

/* One thread's part of the pass s->pass. */
static void slm__forward_worker(slm_session *s, int nth, int slot) {
    const slm_model *m = s->model;
#if defined(SLM__DISPATCH)
    slm__kernels_here = (const slm__kernel_set *)m->kernels;
#endif
    const slm_model_info *in = &m->info;
    const slm_token *tokens = s->pass.tokens;
    int dim = in->dim, hd = in->head_dim, ffn = in->ffn_dim, qd = s->q_dim;
    int n_heads = in->n_heads, n_kv = in->n_kv_heads, n = s->pass.n, n_out = s->pass.n_logits, l, i;
    float eps = in->norm_eps, *att = s->att + (size_t)slot * s->att_rows * s->n_ctx; /* this thread's score rows */
    slm__run *runs = s->runs + (size_t)slot * (size_t)(s->n_ctx + 1);
    long it, n_items;
    int per;
    slm__worker w;
    w.s = s;
    w.nth = nth;
    w.step = 0;
    w.local = 0;
    w.claimed = 0;

    SLM__FOR_ITEMS(&w, it, n) {
        float pos_f = (float)slm__pass_pos(s, (int)it) * in->rope_freq_scale, *cs = s->rope_cs + (size_t)it * hd;
        if (slm__type_is_r16(m->tok_embd->type))
            slm__r16_dequantize_row(m->tok_embd->type, m->tok_embd->data, dim, tokens[it], s->x + (size_t)it * dim);
        else
            slm_dequantize_row(m->tok_embd->type,
                               (const uint8_t *)m->tok_embd->data + (size_t)tokens[it] * m->tok_embd->row_size,
                               s->x + (size_t)it * dim, dim);
        for (i = 0; i < hd / 2; i++) {
            float val = pos_f * s->rope_freq[i];
            cs[2 * i] = cosf(val);
            cs[2 * i + 1] = sinf(val);
        }
    }
    slm__step_done(&w, n);
    for (l = 0; l < in->n_layers; l++) {
        const slm__layer *L = &m->layers[l];

        /* attention block */
        SLM__FOR_ITEMS(&w, it, n) {
            float *xn = s->xn + (size_t)it * dim;
            slm__rmsnorm(xn, s->x + (size_t)it * dim, (const float *)L->attn_norm->data, dim, eps);
            /* a K-quant mix may hold q, k and v in different types */
            if (slm__type_is_quantized(L->wq->type) || slm__type_is_quantized(L->wk->type) ||
                slm__type_is_quantized(L->wv->type))
                slm__quantize_act(s, xn, (int)it, dim);
        }
        slm__step_done(&w, n);
        /* items: the heads of q, k and v, each matrix step and what needs the
           head whole (bias, norm, RoPE, the KV store) by one thread while the
           rows are in its cache: no step between, nor rows written by one
           core and read by the other (1.02x pp512 on two Zen 5 cores) */
        n_items = n_heads + 2 * n_kv;
        SLM__FOR_ITEMS(&w, it, n_items) slm__qkv_head(s, L, l, (int)it);
        slm__step_done(&w, n_items);
        /* items: a token's query heads that share a KV head, SLM__GROUP at most */
        n_items = (long)n * n_kv * s->att_chunks;
        SLM__FOR_ITEMS(&w, it, n_items) {
            int per_kv = n_heads / n_kv, c = (int)(it % s->att_chunks),
                h0 = (int)(it / s->att_chunks % n_kv) * per_kv + c * SLM__GROUP;
            slm__attend(s, l, (int)(it / ((long)n_kv * s->att_chunks)), h0,
                        SLM__MIN(SLM__GROUP, per_kv - c * SLM__GROUP), att, runs);
        }
        slm__step_done(&w, n_items);
        if (slm__type_is_quantized(L->wo->type)) {
            SLM__FOR_ITEMS(&w, it, n) slm__quantize_act(s, s->ao + (size_t)it * qd, (int)it, qd);
            slm__step_done(&w, n);
        }
        n_items = slm__row_items(&w, dim, &per);
        SLM__FOR_ITEMS(&w, it, n_items)
        slm__matmul_item(s, it, per, &L->wo, &s->x, &dim, 1, s->ao, (size_t)qd, n, 1); /* x += Wo attn */
        slm__step_done(&w, n_items);

        /* feed-forward block */
        SLM__FOR_ITEMS(&w, it, n) {
            float *xn = s->xn + (size_t)it * dim;
            slm__rmsnorm(xn, s->x + (size_t)it * dim, (const float *)L->ffn_norm->data, dim, eps);
            if (slm__type_is_quantized(L->w_gate->type) || slm__type_is_quantized(L->w_up->type))
                slm__quantize_act(s, xn, (int)it, dim);
        }
        slm__step_done(&w, n);
        n_items = slm__row_items(&w, ffn, &per);
        SLM__FOR_ITEMS(&w, it, n_items) slm__ffn_gate_up(s, L, (int)it * per, SLM__MIN((int)it * per + per, ffn));
        slm__step_done(&w, n_items);
        if (slm__type_is_quantized(L->w_down->type)) {
            SLM__FOR_ITEMS(&w, it, n) slm__quantize_act(s, s->hb + (size_t)it * ffn, (int)it, ffn);
            slm__step_done(&w, n);
        }
        n_items = slm__row_items(&w, dim, &per);
        SLM__FOR_ITEMS(&w, it, n_items)
        slm__matmul_item(s, it, per, &L->w_down, &s->x, &dim, 1, s->hb, (size_t)ffn, n, 1); /* x += Wdown h */
        slm__step_done(&w, n_items);
    }
    if (n_out == 0) return;
    /* the last n_out tokens' normed activations in rows 0.. of xn (and xq),
       then one matmul over them: the output matrix is read once */
    SLM__FOR_ITEMS(&w, it, n_out) {
        float *xn = s->xn + (size_t)it * dim;
        slm__rmsnorm(xn, s->x + (size_t)(n - n_out + it) * dim, (const float *)m->output_norm->data, dim, eps);
        if (slm__type_is_quantized(m->output->type)) slm__quantize_act(s, xn, (int)it, dim);
    }
    slm__step_done(&w, n_out);
    /* the last step needs no wait: the parallel region ends only when every thread is out */
    n_items = slm__row_items(&w, in->n_vocab, &per);
    SLM__FOR_ITEMS(&w, it, n_items)
    slm__matmul_item(s, it, per, &m->output, &s->pass.logits, &in->n_vocab, 1, s->xn, (size_t)dim, n_out, 0);
}

#ifdef SLM__POOL
typedef struct slm__pool_member {
    slm_session *s;
    int slot;
} slm__pool_member;

#define SLM__POOL_TEAM_BITS 10 /* pool_job's team size: up to 1023 >= SLM__MAX_THREADS */

static int slm__pool_job_ready(const slm_session *s, const void *seen, long v) {
    (void)v;
    return (unsigned)SLM__ATOMIC_LOAD(&s->pool_job) != *(const unsigned *)seen || SLM__ATOMIC_LOAD(&s->pool_quit);
}
static int slm__pool_idle(const slm_session *s, const void *p, long v) {
    (void)p;
    (void)v;
    return SLM__ATOMIC_LOAD(&s->pool_running) == 0;
}

/* A pool thread: waits for a pass, takes part when its slot is in the team. */
SLM__THREAD_FN(slm__pool_main, arg) {
    slm__pool_member *me = (slm__pool_member *)arg;
    slm_session *s = me->s;
    unsigned seen = 0;
    for (;;) {
        int nth;
        slm__pool_wait(s, slm__pool_job_ready, &seen, 0);
        if (SLM__ATOMIC_LOAD(&s->pool_quit)) break;
        seen = (unsigned)SLM__ATOMIC_LOAD(&s->pool_job);
        nth = (int)(seen & ((1u << SLM__POOL_TEAM_BITS) - 1));
        if (me->slot < nth) {
            slm__forward_worker(s, nth, me->slot);
            if (SLM__ATOMIC_SUB(&s->pool_running, 1) == 0) slm__pool_wake(s);
        }
    }
    SLM__THREAD_RETURN;
}

/* Runs a pass on nth threads: the caller and pool slots 1..nth-1. */
static void slm__pool_run(slm_session *s, int nth) {
    unsigned job = (unsigned)SLM__ATOMIC_LOAD(&s->pool_job);
    SLM__ATOMIC_STORE(&s->pool_running, nth - 1);
    job = ((job >> SLM__POOL_TEAM_BITS) + 1u) << SLM__POOL_TEAM_BITS | (unsigned)nth;
    SLM__ATOMIC_STORE(&s->pool_job, job);
    slm__pool_wake(s);
    slm__forward_worker(s, nth, 0);
    slm__pool_wait(s, slm__pool_idle, NULL, 0);
}
#endif

/* Runs s->pass (n <= n_batch tokens). A plain pass appends its tokens to
   the cache; a branch pass leaves n_past alone (its caller counts nodes). */
static void slm__forward(slm_session *s) {
    int n = s->pass.n;
#ifdef SLM__THREADS
    /* a pass costs about n_params x n multiply-adds; below ~4M per thread the
       synchronisation costs more than the second thread saves */
    int nth = (int)SLM__MIN((uint64_t)s->n_threads, s->model->info.n_params * (uint64_t)n / SLM__WORK_PER_THREAD + 1u);
    if (nth > 1) {
        memset(s->steps, 0, (size_t)s->n_steps * sizeof(slm__step));
#if defined(SLM__OPENMP)
#pragma omp parallel num_threads(nth)
        slm__forward_worker(s, omp_get_num_threads(), omp_get_thread_num());
#else
        slm__pool_run(s, nth);
#endif
    } else
#endif
        slm__forward_worker(s, 1, 0);
    memcpy(s->tokens + slm__pass_slot(s, 0), s->pass.tokens, (size_t)n * sizeof(slm_token));
    if (s->pass.node0 < 0) s->n_past += n;
    s->n_evaluated += n;
    s->n_passes++;
}

/* A plain pass over tokens[0..n) (n <= n_batch), with the last one's logits
   in s->logits when want_logits. */
static void slm__forward_plain(slm_session *s, const slm_token *tokens, int n, int want_logits) {
    s->pass.tokens = tokens;
    s->pass.n = n;
    s->pass.node0 = -1;
    s->pass.logits = s->logits;
    s->pass.n_logits = want_logits ? 1 : 0;
    slm__forward(s);
}

SLM_API void slm_session_free(slm_session *s) {
    const slm_allocator *a;
    if (!s) return;
    a = &s->alloc;
#ifdef SLM__POOL
    if (s->pool_sync_ok) {
        int i;
        SLM__ATOMIC_STORE(&s->pool_quit, 1);
        slm__pool_wake(s);
        for (i = 0; i < s->pool_size; i++) slm__thread_join(s->pool[i]);
        slm__mutex_destroy(&s->pool_mu);
        slm__cond_destroy(&s->pool_cv);
    }
    slm__free(a, s->pool);
    slm__free(a, s->pool_members);
#endif
    slm__free(a, s->tokens);
    slm__free(a, s->x);
    slm__free(a, s->xn);
    slm__free(a, s->q);
    slm__free(a, s->k);
    slm__free(a, s->v);
    slm__free(a, s->ao);
    slm__free(a, s->hb);
    slm__free(a, s->att);
    slm__free(a, s->rope_cs);
    slm__free(a, s->logits);
    slm__free(a, s->xq);
    slm__free(a, s->xq_sum);
    slm__free(a, s->xk);
    slm__free(a, s->key_cache);
    slm__free(a, s->value_cache);
    slm__free(a, s->rope_freq);
    slm__free(a, s->cand);
    slm__free(a, s->steps);
    slm__free(a, s->node_parent);
    slm__free(a, s->runs);
    slm__free(a, s->kept_logits);
    slm__sug_free(a, s->suggest);
    slm__gm_trie_free(a, s->gtrie);
    a->free(s, a->user);
}

static uint64_t slm__splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

SLM_API void slm_session_seed(slm_session *s, uint64_t seed) {
    if (s) s->rng = seed ? seed : 0x5EEDu; /* seed 0, the default, has always drawn from 0x5EED */
}

static slm_result slm__session_new_fail(const slm_model *m, const slm_session_desc *d, slm_result code, const char *fmt,
                                        ...) {
    char msg[SLM__MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    slm__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (d->error && d->error_cap) slm__format(d->error, d->error_cap, "%s", msg);
    slm__log(m->log, m->log_user, SLM_LOG_ERROR, "%s", msg);
    return code;
}

/* Everything slm_session_new allocates, one buffer per entry. slm_session_size
   and slm_session_new both work from this plan, so the size one reports is
   the sum of the requests the other makes. */
enum {
    SLM__B_SESSION,
    SLM__B_TOKENS,
    SLM__B_X,
    SLM__B_XN,
    SLM__B_Q,
    SLM__B_K,
    SLM__B_V,
    SLM__B_AO,
    SLM__B_HB,
    SLM__B_ATT,
    SLM__B_ROPE_CS,
    SLM__B_LOGITS,
    SLM__B_XQ,
    SLM__B_XQ_SUM,
    SLM__B_XK,
    SLM__B_KEYS,
    SLM__B_VALUES,
    SLM__B_ROPE_FREQ,
    SLM__B_CAND,
    SLM__B_STEPS,
    SLM__B_NODES,
    SLM__B_RUNS,
    SLM__B_POOL,
    SLM__B_POOL_MEMBERS,
    SLM__N_BUFFERS
};

typedef struct slm__session_plan {
    slm_session_desc d; /* defaults resolved */
    int n_batch, q_dim, kv_dim, xq_blocks, xk_blocks, att_chunks, att_rows, n_steps;
    size_t kv_head_bytes;
    uint64_t bytes[SLM__N_BUFFERS], total;
} slm__session_plan;

/* The buffers that grow with n_ctx are left unwritten: the forward pass
   writes a position's keys, values, token and scores before anything reads
   them (reads stop at n_past + the token's index), so zeroing would only
   make the OS commit pages that the session may never use. */
static int slm__buffer_zeroed(int b) {
    return b != SLM__B_TOKENS && b != SLM__B_ATT && b != SLM__B_KEYS && b != SLM__B_VALUES && b != SLM__B_NODES &&
           b != SLM__B_RUNS;
}

static slm_result slm__session_plan_make(const slm_model *m, const slm_session_desc *desc, slm__session_plan *p,
                                         const char *fn) {
    const slm_model_info *in = &m->info;
    slm_session_desc d;
    uint64_t nb, kv_heads, *b = p->bytes;
    int i;
    memset(p, 0, sizeof *p);
    memset(&d, 0, sizeof d);
    if (desc) d = *desc;
    if (d.error && d.error_cap) d.error[0] = 0;
    p->d = d;
    if (d.n_ctx < 0 || d.n_ctx > (int)SLM__MAX_SEQ || d.n_threads < 0 ||
        (d.kv_type != 0 && d.kv_type != SLM_TYPE_F32 && d.kv_type != SLM_TYPE_F16 && d.kv_type != SLM_TYPE_Q8_0))
        return slm__session_new_fail(m, &d, SLM_ERR_INVALID_ARG, "%s: n_ctx %d, n_threads %d or kv_type %d is invalid",
                                     fn, d.n_ctx, d.n_threads, d.kv_type);
    if (in->n_tensors == 0)
        return slm__session_new_fail(m, &d, SLM_ERR_UNSUPPORTED,
                                     "%s: the model file holds only a tokenizer (no weights)", fn);
    if (d.n_ctx == 0) d.n_ctx = SLM__MIN(in->max_seq, 4096);
#if defined(SLM__OPENMP)
    if (d.n_threads == 0) d.n_threads = omp_get_max_threads();
#elif defined(SLM__PTHREADS)
    if (d.n_threads == 0) d.n_threads = (int)SLM__MAX(1L, sysconf(_SC_NPROCESSORS_ONLN));
#elif defined(SLM__WIN32_THREADS)
    if (d.n_threads == 0) {
        SYSTEM_INFO si; /* the CPUs of the process's processor group (at most 64) */
        GetSystemInfo(&si);
        d.n_threads = (int)SLM__MAX(1u, si.dwNumberOfProcessors);
    }
#else
    d.n_threads = 1;
#endif
    if (d.n_threads > SLM__MAX_THREADS) d.n_threads = SLM__MAX_THREADS;
    /* f32 models keep an f32 cache so they reproduce float references; quantized ones halve it */
    if (d.kv_type == 0) d.kv_type = slm__type_is_quantized(in->weight_type) ? SLM_TYPE_F16 : SLM_TYPE_F32;
    p->d = d;
    p->n_batch = SLM__MIN(SLM__BATCH, d.n_ctx);
    p->q_dim = in->n_heads * in->head_dim;
    p->kv_dim = in->n_kv_heads * in->head_dim;
    p->xq_blocks = SLM__MAX(SLM__MAX(in->dim, p->q_dim), in->ffn_dim) / SLM__QK + 1;
    p->xk_blocks = m->has_kquant ? SLM__MAX(SLM__MAX(in->dim, p->q_dim), in->ffn_dim) / SLM__QK_K : 0;
    p->kv_head_bytes = d.kv_type == SLM_TYPE_F32 ? (size_t)in->head_dim * 4
                       : d.kv_type == SLM_TYPE_F16
                           ? (size_t)in->head_dim * 2
                           : (size_t)(in->head_dim + SLM__QK - 1) / SLM__QK * sizeof(slm__block_q8_0);
    p->att_chunks = (in->n_heads / in->n_kv_heads + SLM__GROUP - 1) / SLM__GROUP;
    p->att_rows = SLM__MIN(SLM__GROUP, in->n_heads / in->n_kv_heads);
    p->n_steps = 9 * in->n_layers + 4; /* slm__forward_worker: 9 steps a layer, embedding, output norm, logits */
    /* the loader's bounds keep every product below 2^62 */
    nb = (uint64_t)p->n_batch;
    kv_heads = (uint64_t)in->n_layers * (uint64_t)d.n_ctx * (uint64_t)in->n_kv_heads;
    b[SLM__B_SESSION] = sizeof(slm_session);
    b[SLM__B_TOKENS] = (uint64_t)d.n_ctx * sizeof(slm_token);
    b[SLM__B_X] = b[SLM__B_XN] = nb * (uint64_t)in->dim * sizeof(float);
    b[SLM__B_Q] = b[SLM__B_AO] = nb * (uint64_t)p->q_dim * sizeof(float);
    b[SLM__B_K] = b[SLM__B_V] = nb * (uint64_t)p->kv_dim * sizeof(float);
    b[SLM__B_HB] = nb * (uint64_t)in->ffn_dim * sizeof(float);
    b[SLM__B_ATT] = (uint64_t)d.n_threads * (uint64_t)p->att_rows * (uint64_t)d.n_ctx * sizeof(float);
    b[SLM__B_ROPE_CS] = nb * (uint64_t)in->head_dim * sizeof(float);
    b[SLM__B_LOGITS] = (uint64_t)in->n_vocab * sizeof(float);
    b[SLM__B_XQ] = nb * (uint64_t)p->xq_blocks * sizeof(slm__block_q8_0);
    b[SLM__B_XQ_SUM] = nb * (uint64_t)p->xq_blocks * sizeof(int32_t);
    b[SLM__B_XK] = nb * (uint64_t)p->xk_blocks * sizeof(slm__block_q8_K);
    b[SLM__B_KEYS] = b[SLM__B_VALUES] = kv_heads * (uint64_t)p->kv_head_bytes;
    b[SLM__B_ROPE_FREQ] = (uint64_t)(in->head_dim / 2) * sizeof(float);
    b[SLM__B_CAND] = (uint64_t)in->n_vocab * sizeof(slm__cand);
    b[SLM__B_STEPS] = (uint64_t)p->n_steps * sizeof(slm__step);
    b[SLM__B_NODES] = 3 * (uint64_t)d.n_ctx * sizeof(int); /* node_parent, node_depth, node_run */
    b[SLM__B_RUNS] = (uint64_t)d.n_threads * ((uint64_t)d.n_ctx + 1) * sizeof(slm__run);
#ifdef SLM__POOL
    if (d.n_threads > 1) {
        b[SLM__B_POOL] = (uint64_t)(d.n_threads - 1) * sizeof(slm__thread);
        b[SLM__B_POOL_MEMBERS] = (uint64_t)(d.n_threads - 1) * sizeof(slm__pool_member);
    }
#endif
    for (i = 0; i < SLM__N_BUFFERS; i++) p->total += b[i];
    if (p->total > (uint64_t)((size_t)-1 / 2)) /* no allocator gives more than half the address space */
        return slm__session_new_fail(m, &d, SLM_ERR_OOM,
                                     "%s: a session of %llu bytes (KV cache %llu) does not fit in this address space",
                                     fn, (unsigned long long)p->total, (unsigned long long)(2 * b[SLM__B_KEYS]));
    return SLM_OK;
}

SLM_API slm_result slm_session_size(const slm_model *m, const slm_session_desc *desc, size_t *bytes) {
    slm__session_plan p;
    slm_result r;
    if (bytes) *bytes = 0;
    if (!m || !bytes) return SLM_ERR_INVALID_ARG;
    r = slm__session_plan_make(m, desc, &p, "slm_session_size");
    if (r == SLM_OK)
        *bytes = (size_t)p.total;
    else if (r == SLM_ERR_OOM)
        *bytes = (size_t)-1;
    return r;
}

SLM_API slm_result slm_session_new(slm_session **out, const slm_model *m, const slm_session_desc *desc) {
    slm__session_plan p;
    const slm_model_info *in;
    slm_allocator a;
    slm_session *s;
    void **buf[SLM__N_BUFFERS];
    slm_result r;
    int i;
    if (out) *out = NULL;
    if (!out || !m) return SLM_ERR_INVALID_ARG;
    in = &m->info;
    if ((r = slm__session_plan_make(m, desc, &p, "slm_session_new")) != SLM_OK) return r;
    if (p.d.max_bytes && p.total > (uint64_t)p.d.max_bytes)
        return slm__session_new_fail(
            m, &p.d, SLM_ERR_OOM,
            "slm_session_new: a session of %llu bytes (KV cache %llu, n_ctx %d) is over max_bytes %llu",
            (unsigned long long)p.total, (unsigned long long)(2 * p.bytes[SLM__B_KEYS]), p.d.n_ctx,
            (unsigned long long)p.d.max_bytes);
    if (p.d.n_ctx > in->max_seq)
        slm__log(m->log, m->log_user, SLM_LOG_WARN, "n_ctx %d is longer than the model's training context %d",
                 p.d.n_ctx, in->max_seq);

    a = m->alloc;
    s = (slm_session *)slm__alloc(&a, (size_t)p.bytes[SLM__B_SESSION]);
    if (!s) return slm__session_new_fail(m, &p.d, SLM_ERR_OOM, "slm_session_new: out of memory");
    memset(s, 0, sizeof *s);
    s->model = m;
    s->alloc = a;
    s->n_ctx = p.d.n_ctx;
    s->n_threads = p.d.n_threads;
    s->kv_type = p.d.kv_type;
    s->n_batch = p.n_batch;
    s->q_dim = p.q_dim;
    s->kv_dim = p.kv_dim;
    s->xq_blocks = p.xq_blocks;
    s->xk_blocks = p.xk_blocks;
    s->kv_head_bytes = p.kv_head_bytes;
    s->att_chunks = p.att_chunks;
    s->att_rows = p.att_rows;
    s->n_steps = p.n_steps;
    s->bytes = (size_t)p.total;
    s->max_bytes = p.d.max_bytes;
    memset(buf, 0, sizeof buf);
    buf[SLM__B_TOKENS] = (void **)&s->tokens;
    buf[SLM__B_X] = (void **)&s->x;
    buf[SLM__B_XN] = (void **)&s->xn;
    buf[SLM__B_Q] = (void **)&s->q;
    buf[SLM__B_K] = (void **)&s->k;
    buf[SLM__B_V] = (void **)&s->v;
    buf[SLM__B_AO] = (void **)&s->ao;
    buf[SLM__B_HB] = (void **)&s->hb;
    buf[SLM__B_ATT] = (void **)&s->att;
    buf[SLM__B_ROPE_CS] = (void **)&s->rope_cs;
    buf[SLM__B_LOGITS] = (void **)&s->logits;
    buf[SLM__B_XQ] = (void **)&s->xq;
    buf[SLM__B_XQ_SUM] = (void **)&s->xq_sum;
    buf[SLM__B_XK] = (void **)&s->xk;
    buf[SLM__B_KEYS] = &s->key_cache;
    buf[SLM__B_VALUES] = &s->value_cache;
    buf[SLM__B_ROPE_FREQ] = (void **)&s->rope_freq;
    buf[SLM__B_CAND] = (void **)&s->cand;
    buf[SLM__B_STEPS] = (void **)&s->steps;
    buf[SLM__B_NODES] = (void **)&s->node_parent;
    buf[SLM__B_RUNS] = (void **)&s->runs;
#ifdef SLM__POOL
    buf[SLM__B_POOL] = (void **)&s->pool;
    buf[SLM__B_POOL_MEMBERS] = (void **)&s->pool_members;
#endif
    for (i = SLM__B_SESSION + 1; i < SLM__N_BUFFERS; i++) {
        size_t n = (size_t)p.bytes[i];
        void *q;
        if (n == 0) continue;
        q = slm__alloc(&a, n);
        if (!q) {
            slm_session_free(s);
            return slm__session_new_fail(
                m, &p.d, SLM_ERR_OOM,
                "slm_session_new: out of memory for %llu bytes (the session needs %llu, KV cache %llu)",
                (unsigned long long)n, (unsigned long long)p.total, (unsigned long long)(2 * p.bytes[SLM__B_KEYS]));
        }
        if (slm__buffer_zeroed(i)) memset(q, 0, n);
        *buf[i] = q;
    }
    s->node_depth = s->node_parent + s->n_ctx;
    s->node_run = s->node_depth + s->n_ctx;
    for (i = 0; i < in->head_dim / 2; i++)
        s->rope_freq[i] = 1.0f / powf(in->rope_theta, (float)(2 * i) / (float)in->head_dim);
    slm_session_seed(s, 0);
#ifdef SLM__POOL
    if (s->n_threads > 1) {
        if (slm__mutex_init(&s->pool_mu)) {
            if (slm__cond_init(&s->pool_cv))
                s->pool_sync_ok = 1;
            else
                slm__mutex_destroy(&s->pool_mu);
        }
        for (i = 0; s->pool_sync_ok && i < s->n_threads - 1; i++) {
            s->pool_members[i].s = s;
            s->pool_members[i].slot = i + 1;
            if (!slm__thread_start(&s->pool[i], slm__pool_main, &s->pool_members[i])) break;
            s->pool_size++;
        }
        if (s->pool_size < s->n_threads - 1) /* run with the threads the system gave */
            slm__log(m->log, m->log_user, SLM_LOG_WARN, "started %d of %d threads", s->pool_size + 1, s->n_threads);
        s->n_threads = s->pool_size + 1;
    }
#endif
    *out = s;
    return SLM_OK;
}

SLM_API const char *slm_session_error(const slm_session *s) { return s ? s->error : ""; }
SLM_API int slm_session_n_past(const slm_session *s) { return s ? s->n_past : -1; }
SLM_API int slm_session_n_ctx(const slm_session *s) { return s ? s->n_ctx : -1; }
SLM_API slm_result slm_session_stats(const slm_session *s, slm_gen_stats *out) {
    if (!s || !out) return SLM_ERR_INVALID_ARG;
    *out = s->stats;
    out->n_evaluated = s->n_evaluated;
    out->n_passes = s->n_passes;
    return SLM_OK;
}

SLM_API slm_result slm_eval(slm_session *s, const slm_token *tokens, int n) {
    int i, n_vocab;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!tokens || n <= 0) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_eval: need at least one token (got %d)", n);
    if (n > s->n_ctx - s->n_past)
        return slm__fail(s, SLM_ERR_CONTEXT_FULL, "slm_eval: %d tokens do not fit: %d of the %d-token context are used",
                         n, s->n_past, s->n_ctx);
    n_vocab = s->model->info.n_vocab;
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_eval: token %d at index %d is outside the vocabulary of %d",
                             (int)tokens[i], i, n_vocab);
    s->logits_valid = 0;
    s->n_nodes = 0;
    for (i = 0; i < n; i += s->n_batch) {
        int chunk = SLM__MIN(s->n_batch, n - i);
        slm__forward_plain(s, tokens + i, chunk, i + chunk == n);
    }
    s->logits_valid = 1;
    return SLM_OK;
}

SLM_API const float *slm_logits(const slm_session *s) { return s && s->logits_valid ? s->logits : NULL; }

SLM_API slm_result slm_rewind(slm_session *s, int n_keep) {
    if (!s) return SLM_ERR_INVALID_ARG;
    if (n_keep < 0 || n_keep > s->n_past)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_rewind: n_keep %d is outside 0..%d", n_keep, s->n_past);
    if (n_keep != s->n_past) s->logits_valid = 0;
    s->n_past = n_keep;
    s->n_nodes = 0;
    return SLM_OK;
}

/* ---- saved and forked sessions ------------------------------------------
   Owns slm_session_save/_load/_fork and the blob format written in the
   header. A saved state is hostile input: every count is checked against the
   session before a product is formed, the checksum before any field is
   trusted, and nothing is written to the session until all checks passed. */

#define SLM__STATE_MAGIC  "SLMS"
#define SLM__STATE_MAJOR  1
#define SLM__STATE_MINOR  0
#define SLM__STATE_HEADER 72 /* bytes before the tokens */
#define SLM__STATE_LOGITS 1u /* flags: the logits of the last position follow the values */

/* XXH64's structure (four lanes of 8-byte rounds, then the tail and the
   avalanche): fast enough that checking a 24 MB state costs less than
   copying it, and every changed byte changes the result. */
#define SLM__XP1 11400714785074694791ull
#define SLM__XP2 14029467366897019727ull
#define SLM__XP3 1609587929392839161ull
#define SLM__XP4 9650029242287828579ull
#define SLM__XP5 2870177450012600261ull
static uint64_t slm__rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static uint64_t slm__xround(uint64_t acc, uint64_t w) { return slm__rotl64(acc + w * SLM__XP2, 31) * SLM__XP1; }
static uint64_t slm__xmerge(uint64_t h, uint64_t v) { return (h ^ slm__xround(0, v)) * SLM__XP1 + SLM__XP4; }
static uint64_t slm__hash64(const uint8_t *p, size_t n, uint64_t seed) {
    const uint8_t *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + SLM__XP1 + SLM__XP2, v2 = seed + SLM__XP2, v3 = seed, v4 = seed - SLM__XP1;
        for (; end - p >= 32; p += 32) {
            v1 = slm__xround(v1, slm__rd64(p));
            v2 = slm__xround(v2, slm__rd64(p + 8));
            v3 = slm__xround(v3, slm__rd64(p + 16));
            v4 = slm__xround(v4, slm__rd64(p + 24));
        }
        h = slm__rotl64(v1, 1) + slm__rotl64(v2, 7) + slm__rotl64(v3, 12) + slm__rotl64(v4, 18);
        h = slm__xmerge(slm__xmerge(slm__xmerge(slm__xmerge(h, v1), v2), v3), v4);
    } else {
        h = seed + SLM__XP5;
    }
    h += (uint64_t)n;
    for (; end - p >= 8; p += 8) h = slm__rotl64(h ^ slm__xround(0, slm__rd64(p)), 27) * SLM__XP1 + SLM__XP4;
    if (end - p >= 4) {
        h = slm__rotl64(h ^ (uint64_t)slm__rd32(p) * SLM__XP1, 23) * SLM__XP2 + SLM__XP3;
        p += 4;
    }
    for (; p < end; p++) h = slm__rotl64(h ^ *p * SLM__XP5, 11) * SLM__XP1;
    h ^= h >> 33;
    h *= SLM__XP2;
    h ^= h >> 29;
    h *= SLM__XP3;
    return h ^ (h >> 32);
}

/* The model's identity: its header and tensor directory (names, types,
   shapes and offsets of every tensor), as the loader checked them. Hashed on
   each call rather than kept in the model, which stays immutable: a few
   kilobytes, microseconds. */
static uint64_t slm__model_hash(const slm_model *m) {
    const uint8_t *h = m->file;
    uint64_t dir_off = slm__rd64(h + SLM__H_TENSORS_OFFSET), dir_size = slm__rd64(h + SLM__H_TENSORS_SIZE);
    return slm__hash64(m->file + dir_off, (size_t)dir_size, slm__hash64(h, slm__rd32(h + SLM__H_HEADER_SIZE), 0));
}

static void slm__wr32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static void slm__wr64(uint8_t *p, uint64_t v) {
    slm__wr32(p, (uint32_t)v);
    slm__wr32(p + 4, (uint32_t)(v >> 32));
}

/* Bytes of one layer's keys (or values) for positions < n_past: in the
   cache they are one run, [pos][kv head]. */
static size_t slm__state_layer_bytes(const slm_session *s, int n_past) {
    return (size_t)n_past * (size_t)s->model->info.n_kv_heads * s->kv_head_bytes;
}

static uint64_t slm__state_size(const slm_session *s, int n_past, int has_logits) {
    return SLM__STATE_HEADER + 4 * (uint64_t)n_past +
           2 * (uint64_t)s->model->info.n_layers * (uint64_t)slm__state_layer_bytes(s, n_past) +
           (has_logits ? 4 * (uint64_t)s->model->info.n_vocab : 0) + 8;
}

/* Keys and values of positions < n_past from src's cache into dst's. */
static void slm__state_copy_cache(slm_session *dst, const slm_session *src, int n_past) {
    size_t lb = slm__state_layer_bytes(src, n_past);
    int l;
    for (l = 0; l < src->model->info.n_layers && lb; l++) {
        memcpy(slm__kv_at(dst, dst->key_cache, l, 0, 0), slm__kv_at(src, src->key_cache, l, 0, 0), lb);
        memcpy(slm__kv_at(dst, dst->value_cache, l, 0, 0), slm__kv_at(src, src->value_cache, l, 0, 0), lb);
    }
}

/* What a restored or forked session drops: its branch tree and the results
   of searches over the old cache. */
static void slm__state_reset_extras(slm_session *s) {
    s->n_nodes = 0;
    slm__sug_free(&s->alloc, s->suggest);
    s->suggest = NULL;
    slm__free(&s->alloc, s->kept_logits);
    s->kept_logits = NULL;
    s->n_kept = 0;
}

SLM_API slm_result slm_session_save(const slm_session *cs, void *buf, size_t cap, size_t *size) {
    slm_session *s = (slm_session *)cs; /* only its error message is written */
    const slm_model_info *in;
    uint64_t need;
    uint8_t *p;
    size_t lb;
    int l;
    if (size) *size = 0;
    if (!s || !size || (!buf && cap)) return SLM_ERR_INVALID_ARG;
    in = &s->model->info;
    need = slm__state_size(s, s->n_past, s->logits_valid);
    if (need > (uint64_t)((size_t)-1 / 2))
        return slm__fail(s, SLM_ERR_OOM, "slm_session_save: the state is %llu bytes", (unsigned long long)need);
    *size = (size_t)need;
    if (!buf) return SLM_OK;
    if (cap < need)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_session_save: the state needs %llu bytes, the buffer holds %llu",
                         (unsigned long long)need, (unsigned long long)cap);
    p = (uint8_t *)buf;
    memset(p, 0, SLM__STATE_HEADER);
    memcpy(p, SLM__STATE_MAGIC, 4);
    p[4] = SLM__STATE_MAJOR;
    p[6] = SLM__STATE_MINOR;
    slm__wr64(p + 8, need);
    slm__wr64(p + 16, slm__model_hash(s->model));
    slm__wr32(p + 24, (uint32_t)s->kv_type);
    slm__wr32(p + 28, (uint32_t)s->n_ctx);
    slm__wr32(p + 32, (uint32_t)s->n_past);
    slm__wr32(p + 36, (uint32_t)in->n_layers);
    slm__wr32(p + 40, (uint32_t)in->n_kv_heads);
    slm__wr32(p + 44, (uint32_t)s->kv_head_bytes);
    slm__wr32(p + 48, (uint32_t)in->n_vocab);
    slm__wr32(p + 52, s->logits_valid ? SLM__STATE_LOGITS : 0u);
    slm__wr64(p + 56, s->rng);
    slm__wr32(p + 64, (uint32_t)s->gen_last);
    p += SLM__STATE_HEADER;
    /* the host is little-endian (slm_model_load refuses others): arrays go as they are */
    if (s->n_past) memcpy(p, s->tokens, (size_t)s->n_past * 4);
    p += (size_t)s->n_past * 4;
    lb = slm__state_layer_bytes(s, s->n_past);
    for (l = 0; l < in->n_layers && lb; l++, p += lb) memcpy(p, slm__kv_at(s, s->key_cache, l, 0, 0), lb);
    for (l = 0; l < in->n_layers && lb; l++, p += lb) memcpy(p, slm__kv_at(s, s->value_cache, l, 0, 0), lb);
    if (s->logits_valid) {
        memcpy(p, s->logits, (size_t)in->n_vocab * 4);
        p += (size_t)in->n_vocab * 4;
    }
    slm__wr64(p, slm__hash64((const uint8_t *)buf, (size_t)need - 8, 0));
    return SLM_OK;
}

static const char *slm__kv_type_name(int t) {
    return t == SLM_TYPE_F32 ? "f32" : t == SLM_TYPE_F16 ? "f16" : t == SLM_TYPE_Q8_0 ? "q8_0" : "unknown";
}

SLM_API slm_result slm_session_load(slm_session *s, const void *data, size_t size) {
    const slm_model_info *in;
    const uint8_t *p = (const uint8_t *)data;
    uint64_t declared;
    uint32_t kv_type, n_past, flags;
    int32_t gen_last;
    size_t lb;
    int i, l;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!data && size) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_session_load: data is NULL");
    in = &s->model->info;
    if (size < SLM__STATE_HEADER + 8 || memcmp(p, SLM__STATE_MAGIC, 4) != 0)
        return slm__fail(s, SLM_ERR_FORMAT,
                         "slm_session_load: not a saved session (%llu bytes, bad magic or too short)",
                         (unsigned long long)size);
    if (slm__rd16(p + 4) != SLM__STATE_MAJOR || slm__rd16(p + 6) != SLM__STATE_MINOR)
        return slm__fail(s, SLM_ERR_UNSUPPORTED, "slm_session_load: state format %u.%u; this library reads %d.%d",
                         slm__rd16(p + 4), slm__rd16(p + 6), SLM__STATE_MAJOR, SLM__STATE_MINOR);
    declared = slm__rd64(p + 8);
    if (declared != (uint64_t)size)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: the state says %llu bytes but %llu were given (%s)",
                         (unsigned long long)declared, (unsigned long long)size,
                         declared > (uint64_t)size ? "truncated" : "extra bytes, or a corrupted size");
    if (slm__hash64(p, size - 8, 0) != slm__rd64(p + size - 8))
        return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: the state is corrupted (checksum mismatch)");
    if (slm__rd64(p + 16) != slm__model_hash(s->model))
        return slm__fail(s, SLM_ERR_INVALID_ARG,
                         "slm_session_load: the state was saved from another model (its hash differs from this "
                         "model's header and tensor directory)");
    kv_type = slm__rd32(p + 24);
    n_past = slm__rd32(p + 32);
    flags = slm__rd32(p + 52);
    gen_last = slm__rdi32(p + 64);
    if (kv_type != (uint32_t)s->kv_type)
        return slm__fail(s, SLM_ERR_INVALID_ARG,
                         "slm_session_load: the state's KV cache is %s, this session's %s (kv_type must match)",
                         slm__kv_type_name((int)kv_type), slm__kv_type_name(s->kv_type));
    if (slm__rd32(p + 36) != (uint32_t)in->n_layers || slm__rd32(p + 40) != (uint32_t)in->n_kv_heads ||
        slm__rd32(p + 44) != (uint32_t)s->kv_head_bytes || slm__rd32(p + 48) != (uint32_t)in->n_vocab ||
        (flags & ~SLM__STATE_LOGITS) || slm__rd32(p + 68) != 0)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: the state's dimensions or flags do not match the model");
    if (n_past > (uint32_t)s->n_ctx)
        return slm__fail(
            s, SLM_ERR_CONTEXT_FULL,
            "slm_session_load: the state holds %u tokens (saved with n_ctx %u); this session's n_ctx is %d", n_past,
            slm__rd32(p + 28), s->n_ctx);
    if (slm__state_size(s, (int)n_past, (flags & SLM__STATE_LOGITS) != 0) != declared)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: the size does not match %u tokens", n_past);
    if (gen_last < -1 || gen_last >= in->n_vocab)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: last sampled token %d is outside the vocabulary",
                         (int)gen_last);
    for (i = 0; i < (int)n_past; i++) {
        int32_t t = slm__rdi32(p + SLM__STATE_HEADER + 4 * (size_t)i);
        if (t < 0 || t >= in->n_vocab)
            return slm__fail(s, SLM_ERR_FORMAT, "slm_session_load: token %d at %d is outside the vocabulary", (int)t,
                             i);
    }
    /* checked: from here on nothing fails */
    slm__state_reset_extras(s);
    memset(&s->stats, 0, sizeof s->stats);
    s->n_past = (int)n_past;
    s->rng = slm__rd64(p + 56);
    s->gen_last = gen_last;
    p += SLM__STATE_HEADER;
    if (n_past) memcpy(s->tokens, p, (size_t)n_past * 4);
    p += (size_t)n_past * 4;
    lb = slm__state_layer_bytes(s, (int)n_past);
    for (l = 0; l < in->n_layers && lb; l++, p += lb) memcpy(slm__kv_at(s, s->key_cache, l, 0, 0), p, lb);
    for (l = 0; l < in->n_layers && lb; l++, p += lb) memcpy(slm__kv_at(s, s->value_cache, l, 0, 0), p, lb);
    s->logits_valid = (flags & SLM__STATE_LOGITS) != 0;
    if (s->logits_valid) memcpy(s->logits, p, (size_t)in->n_vocab * 4);
    return SLM_OK;
}

#ifndef SLM_NO_STDIO
/* fopen of a UTF-8 path (Windows: _wfopen, as slm__open_utf8 says why);
   NULL with *oom set when the allocator said no. */
static FILE *slm__fopen_utf8(const slm_allocator *a, const char *path, const char *mode, int *oom) {
#if defined(_WIN32)
    wchar_t wmode[8];
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0), i;
    wchar_t *wide;
    FILE *f;
    *oom = 0;
    if (n <= 0) return fopen(path, mode);
    for (i = 0; mode[i] && i < 7; i++) wmode[i] = (wchar_t)(unsigned char)mode[i];
    wmode[i] = 0;
    if (!(wide = (wchar_t *)slm__alloc(a, (size_t)n * sizeof(wchar_t)))) {
        *oom = 1;
        return NULL;
    }
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wide, n);
    f = _wfopen(wide, wmode);
    slm__free(a, wide);
    return f;
#else
    (void)a;
    *oom = 0;
    return fopen(path, mode);
#endif
}

/* A file's size through stdio, or -1: 64-bit even where long has 32 bits (Windows). */
static int64_t slm__fsize(FILE *f) {
#if defined(_WIN32)
    int64_t n;
    if (_fseeki64(f, 0, SEEK_END) != 0 || (n = _ftelli64(f)) < 0 || _fseeki64(f, 0, SEEK_SET) != 0) return -1;
    return n;
#else
    long n;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) return -1;
    return (int64_t)n;
#endif
}
#endif

SLM_API slm_result slm_session_save_file(const slm_session *cs, const char *path) {
    slm_session *s = (slm_session *)cs;
#ifdef SLM_NO_STDIO
    (void)path;
    return s ? slm__fail(s, SLM_ERR_UNSUPPORTED, "slm_session_save_file: built with SLM_NO_STDIO")
             : SLM_ERR_INVALID_ARG;
#else
    size_t n = 0;
    void *buf;
    FILE *f;
    int ok, oom;
    slm_result r;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!path) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_session_save_file: path is NULL");
    if ((r = slm_session_save(s, NULL, 0, &n)) != SLM_OK) return r;
    if (!(buf = slm__alloc(&s->alloc, n)))
        return slm__fail(s, SLM_ERR_OOM, "slm_session_save_file: out of memory for %llu bytes", (unsigned long long)n);
    r = slm_session_save(s, buf, n, &n);
    if (r == SLM_OK) {
        if (!(f = slm__fopen_utf8(&s->alloc, path, "wb", &oom))) {
            r = oom ? slm__fail(s, SLM_ERR_OOM, "slm_session_save_file: out of memory opening '%s'", path)
                    : slm__fail(s, SLM_ERR_IO, "slm_session_save_file: cannot open '%s' for writing", path);
        } else {
            ok = fwrite(buf, 1, n, f) == n;
            ok &= fclose(f) == 0;
            if (!ok) r = slm__fail(s, SLM_ERR_IO, "slm_session_save_file: cannot write '%s'", path);
        }
    }
    slm__free(&s->alloc, buf);
    return r;
#endif
}

SLM_API slm_result slm_session_load_file(slm_session *s, const char *path) {
#ifdef SLM_NO_STDIO
    (void)path;
    return s ? slm__fail(s, SLM_ERR_UNSUPPORTED, "slm_session_load_file: built with SLM_NO_STDIO")
             : SLM_ERR_INVALID_ARG;
#else
    FILE *f;
    int64_t len;
    int oom;
    void *buf = NULL;
    slm_result r;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!path) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_session_load_file: path is NULL");
    if (!(f = slm__fopen_utf8(&s->alloc, path, "rb", &oom)))
        return oom ? slm__fail(s, SLM_ERR_OOM, "slm_session_load_file: out of memory opening '%s'", path)
                   : slm__fail(s, SLM_ERR_IO, "slm_session_load_file: cannot open '%s'", path);
    if ((len = slm__fsize(f)) < 0) {
        fclose(f);
        return slm__fail(s, SLM_ERR_IO, "slm_session_load_file: cannot read '%s' (not a regular file?)", path);
    }
    if ((uint64_t)len > (uint64_t)((size_t)-1 / 2)) {
        fclose(f);
        return slm__fail(s, SLM_ERR_UNSUPPORTED, "slm_session_load_file: '%s' (%lld bytes) is too large to read", path,
                         (long long)len);
    }
    if (len > 0 && !(buf = slm__alloc(&s->alloc, (size_t)len))) {
        fclose(f);
        return slm__fail(s, SLM_ERR_OOM, "slm_session_load_file: out of memory for %lld bytes", (long long)len);
    }
    if (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len)
        r = slm__fail(s, SLM_ERR_IO, "slm_session_load_file: cannot read '%s'", path);
    else
        r = slm_session_load(s, buf ? buf : (const void *)"", (size_t)len);
    fclose(f);
    slm__free(&s->alloc, buf);
    return r;
#endif
}

SLM_API slm_result slm_session_fork(slm_session **out, const slm_session *cs) {
    slm_session *s = (slm_session *)cs, *f;
    slm_session_desc d;
    char msg[SLM__MSG_MAX];
    slm_result r;
    if (out) *out = NULL;
    if (!out || !s) return SLM_ERR_INVALID_ARG;
    memset(&d, 0, sizeof d);
    d.n_ctx = s->n_ctx;
    d.n_threads = s->n_threads;
    d.kv_type = s->kv_type;
    d.max_bytes = s->max_bytes;
    d.error = msg;
    d.error_cap = sizeof msg;
    if ((r = slm_session_new(&f, s->model, &d)) != SLM_OK) return slm__fail(s, r, "slm_session_fork: %s", msg);
    f->n_past = s->n_past;
    if (s->n_past) memcpy(f->tokens, s->tokens, (size_t)s->n_past * sizeof(slm_token));
    slm__state_copy_cache(f, s, s->n_past);
    f->logits_valid = s->logits_valid;
    if (s->logits_valid) memcpy(f->logits, s->logits, (size_t)s->model->info.n_vocab * sizeof(float));
    f->rng = s->rng;
    f->gen_last = s->gen_last;
    f->stats = s->stats;
    f->n_evaluated = s->n_evaluated;
    f->n_passes = s->n_passes;
    *out = f;
    return SLM_OK;
}

SLM_API slm_result slm_eval_branches(slm_session *s, const slm_token *tokens, const int *parents, int n,
                                     float *logits) {
    int i, n_vocab;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!tokens || !parents || n <= 0)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_eval_branches: need at least one token and its parent (got %d)",
                         n);
    n_vocab = s->model->info.n_vocab;
    for (i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return slm__fail(s, SLM_ERR_INVALID_ARG,
                             "slm_eval_branches: token %d at index %d is outside the vocabulary of %d", (int)tokens[i],
                             i, n_vocab);
        if (parents[i] < -1 || parents[i] >= s->n_nodes + i)
            return slm__fail(s, SLM_ERR_INVALID_ARG,
                             "slm_eval_branches: parent %d of node %d (index %d) is neither -1 nor an earlier node",
                             parents[i], s->n_nodes + i, i);
    }
    if (n > s->n_ctx - s->n_past - s->n_nodes)
        return slm__fail(s, SLM_ERR_CONTEXT_FULL,
                         "slm_eval_branches: %d nodes do not fit: %d tokens and %d nodes use %d of the %d-token "
                         "context",
                         n, s->n_past, s->n_nodes, s->n_past + s->n_nodes, s->n_ctx);
    for (i = 0; i < n; i++) {
        int node = s->n_nodes + i, parent = parents[i];
        s->node_parent[node] = parent;
        s->node_depth[node] = parent < 0 ? 0 : s->node_depth[parent] + 1;
        /* a child of the node made just before it extends that node's run of
           slots; node 0 under the prefix extends the prefix's (slot 0 on) */
        s->node_run[node] = node == 0 && parent < 0             ? 0
                            : parent >= 0 && parent == node - 1 ? s->node_run[parent]
                                                                : s->n_past + node;
    }
    for (i = 0; i < n; i += s->n_batch) {
        int chunk = SLM__MIN(s->n_batch, n - i);
        s->pass.tokens = tokens + i;
        s->pass.n = chunk;
        s->pass.node0 = s->n_nodes;
        s->pass.logits = logits ? logits + (size_t)i * (size_t)n_vocab : NULL;
        s->pass.n_logits = logits ? chunk : 0;
        slm__forward(s);
        s->n_nodes += chunk;
    }
    return SLM_OK;
}

SLM_API int slm_branch_count(const slm_session *s) { return s ? s->n_nodes : -1; }

SLM_API slm_result slm_branch_keep(slm_session *s, int node) {
    const slm_model_info *in;
    size_t row;
    int depth, d, x, l;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (node < 0 || node >= s->n_nodes)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_branch_keep: node %d does not exist (%d nodes)", node,
                         s->n_nodes);
    in = &s->model->info;
    row = (size_t)in->n_kv_heads * s->kv_head_bytes; /* one slot of one layer: every KV head */
    depth = s->node_depth[node];
    /* the path's nodes in depth order (the caller's run scratch holds them) */
    for (x = node, d = depth; x >= 0; x = s->node_parent[x], d--) s->runs[d].start = x;
    /* a node sits at or after slot n_past + its depth, so each row moves down
       (or stays) and never onto a row still to be moved */
    for (d = 0; d <= depth; d++) {
        int from = s->n_past + s->runs[d].start, to = s->n_past + d;
        if (from == to) continue;
        for (l = 0; l < in->n_layers; l++) {
            memmove(slm__kv_at(s, s->key_cache, l, to, 0), slm__kv_at(s, s->key_cache, l, from, 0), row);
            memmove(slm__kv_at(s, s->value_cache, l, to, 0), slm__kv_at(s, s->value_cache, l, from, 0), row);
        }
        s->tokens[to] = s->tokens[from];
    }
    s->n_past += depth + 1;
    s->n_nodes = 0;
    s->logits_valid = 0;
    return SLM_OK;
}

/* ---- grammars --------------------------------------------------------------
   Owns GBNF text -> slm_grammar: the parser (with line and column in its
   errors), repetitions rewritten as rules, characters and classes compiled to
   UTF-8 byte sequences, and the checks (undefined, never-matching and
   left-recursive rules). The result is rules over bytes, so that tokens,
   which end where they please (mid-character too), are matched byte by byte.
   elems holds the rules one after the other, each an alternative after
   another: its elements, then SLM__GE_ALT when another alternative follows,
   SLM__GE_END after the last (an empty alternative is just the ALT/END).
   What slm_grammar_new guarantees the matcher: every rule matches some
   string and none is left-recursive (so expanding first positions ends);
   an ASCII-only class is one BYTES set, a class with several UTF-8 byte
   sequences a RULE to a rule generated for it (one alternative per
   sequence); a BYTES set may be empty (a class that excludes everything)
   in an alternative that then never matches. */

enum { SLM__GE_END = 0, SLM__GE_ALT, SLM__GE_RULE, SLM__GE_BYTES };
typedef struct slm__gelem {
    int32_t type;  /* SLM__GE_* */
    int32_t value; /* RULE: the rule's index; BYTES: the index of its 256-bit set in sets */
} slm__gelem;

struct slm_grammar {
    slm_allocator alloc;
    int n_rules, root;
    int32_t *rule_first; /* [n_rules] index in elems of the rule's first element */
    slm__gelem *elems;
    int32_t n_elems;
    uint32_t (*sets)[8]; /* byte sets: byte b is in set i when sets[i][b >> 5] >> (b & 31) & 1 */
    int32_t n_sets;
    char **rule_names; /* [n_rules] NUL-terminated; generated rules are named after theirs ("x-3") */
};

/* Limits: every input, however hostile, costs bounded time and memory. */
#define SLM__G_MAX_TEXT   (1 << 20) /* bytes of GBNF text */
#define SLM__G_MAX_DEPTH  200       /* nested parentheses */
#define SLM__G_MAX_REPEAT 2000      /* m and n of {m,n} (llama.cpp's MAX_REPETITION_THRESHOLD) */
#define SLM__G_MAX_ELEMS  (1 << 20) /* elements, before and after compiling */
#define SLM__G_MAX_RULES  (1 << 16) /* rules, generated ones included */
#define SLM__G_MAX_SETS   (1 << 16) /* distinct byte sets */
#define SLM__G_MAX_NAMES  (8 << 20) /* bytes of rule names, generated ones included */

/* Element types used only while parsing: a code point, a character class. */
enum { SLM__GE_CHAR = 4, SLM__GE_CLASS };

typedef struct slm__grule {
    int32_t first, count;     /* its elements in body; count -1 until defined */
    int32_t name;             /* offset of its NUL-terminated name in names */
    int32_t def_pos, ref_pos; /* byte offsets in the text: definition, first reference (-1 none) */
    int32_t origin;           /* the rule written in the text that it was generated for (itself if written) */
    int32_t n_generated;      /* rules generated for it so far: their names are "name-1", "name-2", ... */
} slm__grule;

typedef struct slm__gseq { /* one way to spell code points in UTF-8: a byte set per byte */
    int len;
    uint32_t set[4][8];
} slm__gseq;

typedef struct slm__gparser {
    slm_allocator a;
    const char *text;
    int32_t len, pos, depth;
    char *error;
    size_t error_cap;
    slm_result code;            /* SLM_OK until the first failure */
    slm__gelem *scratch, *body; /* the rules being parsed (nested groups stack up); finished rules */
    int32_t n_scratch, cap_scratch, n_body, cap_body;
    slm__grule *rules;
    int32_t n_rules, cap_rules;
    char *names;
    int32_t n_names, cap_names;
    int32_t *htab, hcap, n_named; /* rule names written in the text -> rule (open addressing, -1 empty) */
    uint32_t (*ranges)[2];        /* the code point ranges of the classes */
    int32_t n_ranges, cap_ranges;
    int32_t (*classes)[2]; /* {first range, count} */
    int32_t n_classes, cap_classes, any_class;
    /* compiling */
    slm__gelem *xelems; /* the rules generated for multi-byte classes, appended to elems at the end */
    int32_t n_xelems, cap_xelems, cap_elems, cap_sets, cap_first;
    int32_t *stab, scap; /* byte set -> index in sets (open addressing, -1 empty) */
    slm__gseq *seqs;
    int32_t n_seqs, cap_seqs;
    int64_t merge_budget; /* pairs of sequences compared, in all classes: bounded time for any text */
    slm_grammar *g;
} slm__gparser;

static void slm__g_line_col(const char *text, int32_t pos, int *line, int *col) {
    int32_t i, start = 0;
    *line = 1;
    for (i = 0; i < pos; i++)
        if (text[i] == '\n') {
            ++*line;
            start = i + 1;
        }
    *col = (int)(pos - start) + 1;
}

/* Keeps the first failure: "line L, column C: message" (pos < 0: no position). */
static int slm__g_fail(slm__gparser *p, int32_t pos, slm_result code, const char *fmt, ...) {
    char msg[SLM__MSG_MAX];
    va_list ap;
    if (p->code != SLM_OK) return 0;
    p->code = code;
    va_start(ap, fmt);
    slm__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->error && p->error_cap) {
        if (pos >= 0) {
            int line, col;
            slm__g_line_col(p->text, pos, &line, &col);
            slm__format(p->error, p->error_cap, "line %d, column %d: %s", line, col, msg);
        } else {
            slm__format(p->error, p->error_cap, "%s", msg);
        }
    }
    return 0;
}

/* Makes room for need items in *ptr (doubling). 1 on success; 0 after a
   failure: more than limit items (an error naming what), or out of memory. */
static int slm__g_grow(slm__gparser *p, void **ptr, int32_t *cap, int64_t need, size_t item, int32_t limit,
                       const char *what) {
    int64_t n;
    void *q;
    if (p->code != SLM_OK) return 0;
    if (need <= *cap) return 1;
    if (need > limit)
        return slm__g_fail(p, -1, SLM_ERR_INVALID_ARG, "grammar too large: more than %d %s", (int)limit, what);
    n = *cap ? (int64_t)*cap * 2 : 64;
    while (n < need) n *= 2;
    if (n > limit) n = limit;
    q = slm__alloc(&p->a, (size_t)n * item);
    if (!q) return slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
    if (*cap) memcpy(q, *ptr, (size_t)*cap * item);
    slm__free(&p->a, *ptr);
    *ptr = q;
    *cap = (int32_t)n;
    return 1;
}

static int slm__g_push(slm__gparser *p, int32_t type, int32_t value) {
    if (!slm__g_grow(p, (void **)&p->scratch, &p->cap_scratch, (int64_t)p->n_scratch + 1, sizeof(slm__gelem),
                     SLM__G_MAX_ELEMS, "elements"))
        return 0;
    p->scratch[p->n_scratch].type = type;
    p->scratch[p->n_scratch++].value = value;
    return 1;
}

static uint32_t slm__g_hash(const void *data, size_t n) { /* FNV-1a */
    const uint8_t *b = (const uint8_t *)data;
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
    return h;
}

/* A new rule named name (len bytes), or "origin-N" for a rule generated for
   origin (name NULL). Returns its index, -1 after a failure. */
static int32_t slm__g_new_rule(slm__gparser *p, const char *name, int32_t len, int32_t origin, int32_t pos) {
    char digits[16];
    int32_t id = p->n_rules, n, nd = 0, from = -1, k;
    slm__grule *r;
    if (!name) {
        slm__grule *o = &p->rules[origin];
        k = ++o->n_generated;
        do digits[nd++] = (char)('0' + k % 10);
        while ((k /= 10) != 0);
        from = o->name;
        len = (int32_t)strlen(p->names + from);
    }
    n = len + (nd ? nd + 1 : 0) + 1;
    if (!slm__g_grow(p, (void **)&p->rules, &p->cap_rules, (int64_t)id + 1, sizeof(slm__grule), SLM__G_MAX_RULES,
                     "rules") ||
        !slm__g_grow(p, (void **)&p->names, &p->cap_names, (int64_t)p->n_names + n, 1, SLM__G_MAX_NAMES,
                     "bytes of rule names"))
        return -1;
    if (from >= 0) name = p->names + from; /* after the growth: names may have moved */
    r = &p->rules[id];
    r->name = p->n_names;
    memcpy(p->names + p->n_names, name, (size_t)len);
    k = p->n_names + len;
    if (nd) {
        p->names[k++] = '-';
        while (nd) p->names[k++] = digits[--nd];
    }
    p->names[k] = 0;
    p->n_names += n;
    r->first = 0;
    r->count = -1;
    r->def_pos = pos;
    r->ref_pos = -1;
    r->origin = origin < 0 ? id : origin;
    r->n_generated = 0;
    p->n_rules++;
    return id;
}

/* The rule named in the text (len bytes at name), created at its first
   mention. -1 after a failure. */
static int32_t slm__g_named_rule(slm__gparser *p, const char *name, int32_t len) {
    uint32_t h, mask;
    int32_t id, i;
    if (2 * (p->n_named + 1) > p->hcap) { /* rebuild, twice as large */
        int32_t cap = p->hcap ? p->hcap * 2 : 64, *t;
        t = (int32_t *)slm__alloc(&p->a, (size_t)cap * sizeof(int32_t));
        if (!t) return slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory"), -1;
        for (i = 0; i < cap; i++) t[i] = -1;
        for (i = 0; i < p->hcap; i++) {
            if (p->htab[i] < 0) continue;
            {
                const char *nm = p->names + p->rules[p->htab[i]].name;
                h = slm__g_hash(nm, strlen(nm)) & (uint32_t)(cap - 1);
                while (t[h] >= 0) h = (h + 1) & (uint32_t)(cap - 1);
                t[h] = p->htab[i];
            }
        }
        slm__free(&p->a, p->htab);
        p->htab = t;
        p->hcap = cap;
    }
    mask = (uint32_t)(p->hcap - 1);
    for (h = slm__g_hash(name, (size_t)len) & mask; p->htab[h] >= 0; h = (h + 1) & mask) {
        const char *nm = p->names + p->rules[p->htab[h]].name;
        if (strncmp(nm, name, (size_t)len) == 0 && nm[len] == 0) return p->htab[h];
    }
    id = slm__g_new_rule(p, name, len, -1, -1);
    if (id < 0) return -1;
    p->htab[h] = id;
    p->n_named++;
    return id;
}

static int slm__g_word_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

/* Spaces, tabs and comments; newlines too when newline_ok (inside
   parentheses, after ::= and |): outside them a newline ends the rule. */
static void slm__g_space(slm__gparser *p, int newline_ok) {
    const char *t = p->text;
    for (;;) {
        char c = t[p->pos];
        if (c == ' ' || c == '\t' || (newline_ok && (c == '\r' || c == '\n')))
            p->pos++;
        else if (c == '#')
            while (t[p->pos] && t[p->pos] != '\r' && t[p->pos] != '\n') p->pos++;
        else
            return;
    }
}

/* One character of a literal or class: an escape or a UTF-8 code point
   (the text was checked to be valid UTF-8). 1 on success. */
static int slm__g_char(slm__gparser *p, uint32_t *cp) {
    const uint8_t *t = (const uint8_t *)p->text + p->pos;
    int32_t at = p->pos;
    if (t[0] == '\\') {
        int digits = 0, i;
        uint32_t v = 0;
        switch (t[1]) {
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        case 'n': *cp = '\n'; break;
        case 'r': *cp = '\r'; break;
        case 't': *cp = '\t'; break;
        case '\\':
        case '"':
        case '[':
        case ']':
        case '-': *cp = t[1]; break;
        case 0: return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "unexpected end of the text after '\\'");
        default:
            if (t[1] >= 0x20 && t[1] < 0x7f)
                return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "unknown escape '\\%c'", (char)t[1]);
            return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "unknown escape (byte 0x%x after '\\')", (unsigned)t[1]);
        }
        if (!digits) {
            p->pos += 2;
            return 1;
        }
        for (i = 0; i < digits; i++) {
            uint8_t c = t[2 + i];
            if (c >= '0' && c <= '9')
                v = v * 16 + (c - '0');
            else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
                v = v * 16 + ((c | 0x20) - 'a' + 10);
            else
                return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "bad escape: '\\%c' needs %d hex digits", (char)t[1],
                                   digits);
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "bad escape: U+%x is not a Unicode scalar value", v);
        *cp = v;
        p->pos += 2 + digits;
        return 1;
    }
    if (t[0] < 0x80) {
        *cp = t[0];
        p->pos += 1;
    } else if (t[0] < 0xE0) {
        *cp = ((uint32_t)(t[0] & 0x1F) << 6) | (t[1] & 0x3F);
        p->pos += 2;
    } else if (t[0] < 0xF0) {
        *cp = ((uint32_t)(t[0] & 0x0F) << 12) | ((uint32_t)(t[1] & 0x3F) << 6) | (t[2] & 0x3F);
        p->pos += 3;
    } else {
        *cp = ((uint32_t)(t[0] & 0x07) << 18) | ((uint32_t)(t[1] & 0x3F) << 12) | ((uint32_t)(t[2] & 0x3F) << 6) |
              (t[3] & 0x3F);
        p->pos += 4;
    }
    return 1;
}

static int slm__g_cmp_range(const void *a, const void *b) {
    const uint32_t *x = (const uint32_t *)a, *y = (const uint32_t *)b;
    return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : x[1] > y[1];
}

static int slm__g_add_range(slm__gparser *p, uint32_t lo, uint32_t hi) {
    if (!slm__g_grow(p, (void **)&p->ranges, &p->cap_ranges, (int64_t)p->n_ranges + 1, sizeof p->ranges[0],
                     SLM__G_MAX_ELEMS, "class ranges"))
        return 0;
    p->ranges[p->n_ranges][0] = lo;
    p->ranges[p->n_ranges++][1] = hi;
    return 1;
}

/* The ranges from first on, sorted and merged, complemented when negated,
   surrogates removed, become class n_classes. Returns its index, -1 after a
   failure. */
static int32_t slm__g_end_class(slm__gparser *p, int32_t first, int negated) {
    int32_t n = p->n_ranges - first, m = 0, i, out, end;
    uint32_t cur = 0;
    if (n > 1) qsort(p->ranges + first, (size_t)n, sizeof p->ranges[0], slm__g_cmp_range);
    for (i = 0; i < n; i++) { /* merge overlapping and adjacent ranges */
        uint32_t *r = p->ranges[first + i], *last = p->ranges[first + m - 1];
        if (m && r[0] <= last[1] + 1) {
            if (r[1] > last[1]) last[1] = r[1];
        } else {
            p->ranges[first + m][0] = r[0];
            p->ranges[first + m++][1] = r[1];
        }
    }
    p->n_ranges = first + m;
    out = p->n_ranges;
    if (negated) {
        for (i = 0; i < m; i++) {
            uint32_t lo = p->ranges[first + i][0], hi = p->ranges[first + i][1];
            if (lo > cur && !slm__g_add_range(p, cur, lo - 1)) return -1;
            cur = hi + 1;
        }
        if (cur <= 0x10FFFF && !slm__g_add_range(p, cur, 0x10FFFF)) return -1;
    } else {
        for (i = 0; i < m; i++)
            if (!slm__g_add_range(p, p->ranges[first + i][0], p->ranges[first + i][1])) return -1;
    }
    end = p->n_ranges;
    p->n_ranges = first;
    for (i = out; i < end; i++) { /* copy down, without the surrogates */
        uint32_t lo = p->ranges[i][0], hi = p->ranges[i][1];
        if (lo < 0xD800 && !slm__g_add_range(p, lo, hi < 0xD800 ? hi : 0xD7FF)) return -1;
        if (hi > 0xDFFF && !slm__g_add_range(p, lo > 0xDFFF ? lo : 0xE000, hi)) return -1;
    }
    if (!slm__g_grow(p, (void **)&p->classes, &p->cap_classes, (int64_t)p->n_classes + 1, sizeof p->classes[0],
                     SLM__G_MAX_ELEMS, "character classes"))
        return -1;
    p->classes[p->n_classes][0] = first;
    p->classes[p->n_classes][1] = p->n_ranges - first;
    return p->n_classes++;
}

/* Parses a number of {m,n}; values past the limit saturate (reported by the caller). */
static int slm__g_int(slm__gparser *p, uint32_t *v) {
    const char *t = p->text;
    if (t[p->pos] < '0' || t[p->pos] > '9')
        return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG, "expected a number in '{...}'");
    *v = 0;
    while (t[p->pos] >= '0' && t[p->pos] <= '9') {
        *v = *v * 10 + (uint32_t)(t[p->pos++] - '0');
        if (*v > 100000000u) *v = 100000000u;
    }
    return 1;
}

/* x{min,max} (max < 0: unbounded) on the element(s) scratch[last..], as
   llama.cpp rewrites it, right-recursive:
     x{m,n} -> x .. x (m times) x'(n-m), x'(k) ::= x x'(k-1) | , x'(1) ::= x |
     x{m,}  -> x .. x (m times) x',      x'    ::= x x' | */
static int slm__g_repeat(slm__gparser *p, int32_t last, int32_t origin, int64_t min, int64_t max, int32_t at) {
    int32_t n = p->n_scratch - last, prev_rule = -1, n_opt, i, k;
    if (n <= 0) return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "nothing before '%c' to repeat", p->text[at]);
    n_opt = max < 0 ? 1 : (int32_t)(max - min);
    for (i = 0; i < n_opt; i++) {
        int32_t id = slm__g_new_rule(p, NULL, 0, origin, p->rules[origin].def_pos), extra = i > 0 || max < 0;
        if (id < 0 || !slm__g_grow(p, (void **)&p->body, &p->cap_body, (int64_t)p->n_body + n + extra + 2,
                                   sizeof(slm__gelem), SLM__G_MAX_ELEMS, "elements"))
            return 0;
        p->rules[id].first = p->n_body;
        memcpy(p->body + p->n_body, p->scratch + last, (size_t)n * sizeof(slm__gelem));
        p->n_body += n;
        if (extra) {
            p->body[p->n_body].type = SLM__GE_RULE;
            p->body[p->n_body++].value = max < 0 ? id : prev_rule;
        }
        p->body[p->n_body].type = SLM__GE_ALT;
        p->body[p->n_body++].value = 0;
        p->body[p->n_body].type = SLM__GE_END;
        p->body[p->n_body++].value = 0;
        p->rules[id].count = p->n_body - p->rules[id].first;
        prev_rule = id;
    }
    if (min == 0)
        p->n_scratch = last;
    else if (!slm__g_grow(p, (void **)&p->scratch, &p->cap_scratch, (int64_t)p->n_scratch + (min - 1) * n + 1,
                          sizeof(slm__gelem), SLM__G_MAX_ELEMS, "elements"))
        return 0;
    for (k = 1; k < min; k++) {
        memcpy(p->scratch + p->n_scratch, p->scratch + last, (size_t)n * sizeof(slm__gelem));
        p->n_scratch += n;
    }
    return n_opt > 0 ? slm__g_push(p, SLM__GE_RULE, prev_rule) : 1;
}

static int slm__g_alternates(slm__gparser *p, int32_t rule, int32_t origin, int nested);

/* A sequence of elements, each maybe followed by repetitions, onto scratch. */
static int slm__g_sequence(slm__gparser *p, int32_t origin, int nested) {
    const char *t = p->text;
    int32_t last = p->n_scratch;
    while (p->code == SLM_OK) {
        char c = t[p->pos];
        int32_t at = p->pos;
        if (c == '"') {
            uint32_t cp;
            p->pos++;
            last = p->n_scratch;
            while (t[p->pos] != '"') {
                if (!t[p->pos]) return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "unterminated string literal");
                if (!slm__g_char(p, &cp) || !slm__g_push(p, SLM__GE_CHAR, (int32_t)cp)) return 0;
            }
            p->pos++;
        } else if (c == '[') {
            int negated = t[p->pos + 1] == '^';
            int32_t first = p->n_ranges, cls;
            p->pos += 1 + negated;
            while (t[p->pos] != ']') {
                uint32_t lo, hi;
                int32_t range_at = p->pos;
                if (!t[p->pos]) return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "unterminated character class");
                if (!slm__g_char(p, &lo)) return 0;
                hi = lo;
                if (t[p->pos] == '-' && t[p->pos + 1] != ']' && t[p->pos + 1]) {
                    p->pos++;
                    if (!slm__g_char(p, &hi)) return 0;
                    if (hi < lo)
                        return slm__g_fail(p, range_at, SLM_ERR_INVALID_ARG,
                                           "character range ends (U+%x) before it starts (U+%x)", hi, lo);
                }
                if (!slm__g_add_range(p, lo, hi)) return 0;
            }
            if (p->n_ranges == first) return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "empty character class");
            p->pos++;
            cls = slm__g_end_class(p, first, negated);
            last = p->n_scratch;
            if (cls < 0 || !slm__g_push(p, SLM__GE_CLASS, cls)) return 0;
        } else if (c == '<' || c == '!') {
            return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "token references (<...>, !<...>) are not supported");
        } else if (slm__g_word_char(c)) {
            int32_t id;
            while (slm__g_word_char(t[p->pos])) p->pos++;
            id = slm__g_named_rule(p, t + at, p->pos - at);
            if (id < 0) return 0;
            if (p->rules[id].ref_pos < 0) p->rules[id].ref_pos = at;
            last = p->n_scratch;
            if (!slm__g_push(p, SLM__GE_RULE, id)) return 0;
        } else if (c == '(') {
            int32_t id;
            if (p->depth >= SLM__G_MAX_DEPTH)
                return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "parentheses nested deeper than %d", SLM__G_MAX_DEPTH);
            p->pos++;
            slm__g_space(p, 1);
            id = slm__g_new_rule(p, NULL, 0, origin, p->rules[origin].def_pos);
            if (id < 0) return 0;
            p->depth++;
            if (!slm__g_alternates(p, id, origin, 1)) return 0;
            p->depth--;
            if (t[p->pos] != ')') {
                int line, col;
                slm__g_line_col(t, at, &line, &col);
                return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG,
                                   "expected ')' to close the '(' of line %d, column %d", line, col);
            }
            p->pos++;
            last = p->n_scratch;
            if (!slm__g_push(p, SLM__GE_RULE, id)) return 0;
        } else if (c == '.') {
            p->pos++;
            if (p->any_class < 0) {
                p->any_class = slm__g_end_class(p, p->n_ranges, 1);
                if (p->any_class < 0) return 0;
            }
            last = p->n_scratch;
            if (!slm__g_push(p, SLM__GE_CLASS, p->any_class)) return 0;
        } else if (c == '*' || c == '+' || c == '?') {
            p->pos++;
            slm__g_space(p, nested);
            if (!slm__g_repeat(p, last, origin, c == '+', c == '?' ? 1 : -1, at)) return 0;
            continue;
        } else if (c == '{') {
            uint32_t min, max;
            int64_t max_times;
            p->pos++;
            slm__g_space(p, nested);
            if (!slm__g_int(p, &min)) return 0;
            slm__g_space(p, nested);
            max = min;
            max_times = min;
            if (t[p->pos] == ',') {
                p->pos++;
                slm__g_space(p, nested);
                max_times = -1;
                if (t[p->pos] >= '0' && t[p->pos] <= '9') {
                    if (!slm__g_int(p, &max)) return 0;
                    max_times = max;
                    slm__g_space(p, nested);
                }
            }
            if (t[p->pos] != '}') return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG, "expected '}' or ',' in '{...}'");
            p->pos++;
            slm__g_space(p, nested);
            if (min > SLM__G_MAX_REPEAT || (max_times >= 0 && max > SLM__G_MAX_REPEAT))
                return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "repetition count above the limit of %d",
                                   SLM__G_MAX_REPEAT);
            if (max_times >= 0 && max < min)
                return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "repetition {%u,%u}: the maximum is below the minimum",
                                   min, max);
            if (!slm__g_repeat(p, last, origin, min, max_times, at)) return 0;
            continue;
        } else {
            break;
        }
        slm__g_space(p, nested);
    }
    return p->code == SLM_OK;
}

/* Alternatives separated by '|', the body of rule. */
static int slm__g_alternates(slm__gparser *p, int32_t rule, int32_t origin, int nested) {
    int32_t start = p->n_scratch, n;
    if (!slm__g_sequence(p, origin, nested)) return 0;
    while (p->text[p->pos] == '|') {
        if (!slm__g_push(p, SLM__GE_ALT, 0)) return 0;
        p->pos++;
        slm__g_space(p, 1);
        if (!slm__g_sequence(p, origin, nested)) return 0;
    }
    if (!slm__g_push(p, SLM__GE_END, 0)) return 0;
    n = p->n_scratch - start;
    if (!slm__g_grow(p, (void **)&p->body, &p->cap_body, (int64_t)p->n_body + n, sizeof(slm__gelem), SLM__G_MAX_ELEMS,
                     "elements"))
        return 0;
    memcpy(p->body + p->n_body, p->scratch + start, (size_t)n * sizeof(slm__gelem));
    p->rules[rule].first = p->n_body;
    p->rules[rule].count = n;
    p->n_body += n;
    p->n_scratch = start;
    return 1;
}

/* name ::= alternatives, ended by a newline or the end of the text. */
static int slm__g_rule(slm__gparser *p) {
    const char *t = p->text;
    int32_t at = p->pos, id;
    if (!slm__g_word_char(t[at])) {
        if (t[at] == '|')
            return slm__g_fail(p, at, SLM_ERR_INVALID_ARG,
                               "expected a rule name, found '|' (a rule's alternatives continue on the next line "
                               "only after a '|' that ends the line, or inside parentheses)");
        return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "expected a rule name");
    }
    while (slm__g_word_char(t[p->pos])) p->pos++;
    id = slm__g_named_rule(p, t + at, p->pos - at);
    if (id < 0) return 0;
    if (p->rules[id].count >= 0) {
        int line, col;
        slm__g_line_col(t, p->rules[id].def_pos, &line, &col);
        return slm__g_fail(p, at, SLM_ERR_INVALID_ARG, "rule '%s' is defined twice (first at line %d, column %d)",
                           p->names + p->rules[id].name, line, col);
    }
    p->rules[id].def_pos = at;
    slm__g_space(p, 0);
    if (!(t[p->pos] == ':' && t[p->pos + 1] == ':' && t[p->pos + 2] == '='))
        return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG, "expected '::=' after the rule name '%s'",
                           p->names + p->rules[id].name);
    p->pos += 3;
    slm__g_space(p, 1);
    if (!slm__g_alternates(p, id, id, 0)) return 0;
    if (t[p->pos] == '\r')
        p->pos += t[p->pos + 1] == '\n' ? 2 : 1;
    else if (t[p->pos] == '\n')
        p->pos++;
    else if (t[p->pos]) {
        if (t[p->pos] == ')') return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG, "unmatched ')'");
        return slm__g_fail(p, p->pos, SLM_ERR_INVALID_ARG,
                           "unexpected '%c' (expected an element, '|' or the end of the line)", t[p->pos]);
    }
    slm__g_space(p, 1);
    return 1;
}

/* ---- compiling: code points to UTF-8 byte sets ---- */

static int32_t slm__g_set(slm__gparser *p, const uint32_t set[8]) {
    slm_grammar *g = p->g;
    uint32_t h, mask;
    int32_t i;
    if (2 * (g->n_sets + 1) > p->scap) {
        int32_t cap = p->scap ? p->scap * 2 : 256, *t;
        t = (int32_t *)slm__alloc(&p->a, (size_t)cap * sizeof(int32_t));
        if (!t) return slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory"), -1;
        for (i = 0; i < cap; i++) t[i] = -1;
        for (i = 0; i < g->n_sets; i++) {
            h = slm__g_hash(g->sets[i], 32) & (uint32_t)(cap - 1);
            while (t[h] >= 0) h = (h + 1) & (uint32_t)(cap - 1);
            t[h] = i;
        }
        slm__free(&p->a, p->stab);
        p->stab = t;
        p->scap = cap;
    }
    mask = (uint32_t)(p->scap - 1);
    for (h = slm__g_hash(set, 32) & mask; p->stab[h] >= 0; h = (h + 1) & mask)
        if (memcmp(g->sets[p->stab[h]], set, 32) == 0) return p->stab[h];
    if (!slm__g_grow(p, (void **)&g->sets, &p->cap_sets, (int64_t)g->n_sets + 1, 32, SLM__G_MAX_SETS, "byte sets"))
        return -1;
    memcpy(g->sets[g->n_sets], set, 32);
    p->stab[h] = g->n_sets;
    return g->n_sets++;
}

static void slm__g_set_range(uint32_t set[8], uint32_t lo, uint32_t hi) {
    uint32_t b;
    for (b = lo; b <= hi; b++) set[b >> 5] |= 1u << (b & 31);
}

static int slm__g_utf8(uint32_t cp, uint8_t *b) {
    if (cp < 0x80) return b[0] = (uint8_t)cp, 1;
    if (cp < 0x800) return b[0] = (uint8_t)(0xC0 | cp >> 6), b[1] = (uint8_t)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000)
        return b[0] = (uint8_t)(0xE0 | cp >> 12), b[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)),
               b[2] = (uint8_t)(0x80 | (cp & 0x3F)), 3;
    b[0] = (uint8_t)(0xF0 | cp >> 18), b[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F)), b[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

/* The classic split of a code point range into byte-range sequences (as
   RE2 and utf8-ranges do): ranges whose code points all have the same
   UTF-8 length and whose bytes vary independently. */
static int slm__g_split(slm__gparser *p, uint32_t lo, uint32_t hi) {
    static const uint32_t bounds[3] = { 0x7F, 0x7FF, 0xFFFF };
    uint8_t a[4], b[4];
    int i, n;
    slm__gseq *s;
    for (i = 0; i < 3; i++)
        if (lo <= bounds[i] && hi > bounds[i])
            return slm__g_split(p, lo, bounds[i]) && slm__g_split(p, bounds[i] + 1, hi);
    n = slm__g_utf8(lo, a);
    for (i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if (lo & m) return slm__g_split(p, lo, lo | m) && slm__g_split(p, (lo | m) + 1, hi);
            if ((hi & m) != m) return slm__g_split(p, lo, (hi & ~m) - 1) && slm__g_split(p, hi & ~m, hi);
        }
    }
    slm__g_utf8(hi, b);
    if (!slm__g_grow(p, (void **)&p->seqs, &p->cap_seqs, (int64_t)p->n_seqs + 1, sizeof(slm__gseq), SLM__G_MAX_SETS,
                     "UTF-8 byte sequences in a class"))
        return 0;
    s = &p->seqs[p->n_seqs++];
    memset(s, 0, sizeof *s);
    s->len = n;
    for (i = 0; i < n; i++) slm__g_set_range(s->set[i], a[i], b[i]);
    return 1;
}

/* Class c as byte-set sequences in p->seqs: every one-byte sequence in one,
   then (for a few) sequences that differ in one byte only merged. */
static int slm__g_class_seqs(slm__gparser *p, int32_t c) {
    int32_t i, j, k, first = p->classes[c][0], n = p->classes[c][1], one = -1, changed = 1;
    p->n_seqs = 0;
    for (i = 0; i < n; i++)
        if (!slm__g_split(p, p->ranges[first + i][0], p->ranges[first + i][1])) return 0;
    for (i = 0; i < p->n_seqs; i++) { /* the one-byte sequences come first (ranges are sorted) */
        if (p->seqs[i].len != 1) continue;
        if (one < 0)
            one = i;
        else
            for (k = 0; k < 8; k++) p->seqs[one].set[0][k] |= p->seqs[i].set[0][k];
        p->seqs[i].len = 0;
        if (one == i) p->seqs[i].len = 1;
    }
    for (i = j = 0; i < p->n_seqs; i++)
        if (p->seqs[i].len) p->seqs[j++] = p->seqs[i];
    p->n_seqs = j;
    while (changed && p->n_seqs <= 256) {
        changed = 0;
        for (i = 0; i < p->n_seqs; i++)
            for (j = i + 1; j < p->n_seqs; j++) {
                slm__gseq *x = &p->seqs[i], *y = &p->seqs[j];
                int diff = 0, at = 0;
                if (--p->merge_budget < 0) return 1; /* unmerged is as right, only larger */
                if (x->len != y->len) continue;
                for (k = 0; k < x->len && diff < 2; k++)
                    if (memcmp(x->set[k], y->set[k], 32)) diff++, at = k;
                if (diff > 1) continue;
                for (k = 0; k < 8; k++) x->set[at][k] |= y->set[at][k];
                *y = p->seqs[--p->n_seqs];
                changed = 1;
                j--;
            }
    }
    return 1;
}

static int slm__g_emit(slm__gparser *p, slm__gelem **arr, int32_t *n, int32_t *cap, int32_t type, int32_t value) {
    if (!slm__g_grow(p, (void **)arr, cap, (int64_t)*n + 1, sizeof(slm__gelem), SLM__G_MAX_ELEMS, "compiled elements"))
        return 0;
    (*arr)[*n].type = type;
    (*arr)[*n].value = value;
    ++*n;
    return 1;
}

/* ---- the checks ---- */

/* Rules that match some string (what = 0) or the empty string (what = 1),
   by a worklist over the alternatives: an alternative is done when every
   element is; its rule then is. Linear in the elements. */
static int slm__g_fixpoint(slm__gparser *p, int what, uint8_t *done) {
    slm_grammar *g = p->g;
    int32_t n_alts = 0, i, e, *alt_rule, *need, *occ_first, *occ, *queue, nq = 0, head = 0, a;
    int ok = 0;
    for (e = 0; e < g->n_elems; e++) n_alts += g->elems[e].type <= SLM__GE_ALT;
    alt_rule = (int32_t *)slm__calloc(&p->a, (size_t)n_alts + 1, sizeof(int32_t));
    need = (int32_t *)slm__calloc(&p->a, (size_t)n_alts + 1, sizeof(int32_t));
    occ_first = (int32_t *)slm__calloc(&p->a, (size_t)g->n_rules + 1, sizeof(int32_t));
    occ = (int32_t *)slm__calloc(&p->a, (size_t)g->n_elems + 1, sizeof(int32_t));
    queue = (int32_t *)slm__calloc(&p->a, (size_t)g->n_rules + (size_t)n_alts + 1, sizeof(int32_t));
    if (!alt_rule || !need || !occ_first || !occ || !queue) {
        slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
        goto out;
    }
    memset(done, 0, (size_t)g->n_rules);
    for (i = 0, a = 0; i < g->n_rules; i++)
        for (e = g->rule_first[i];; e++) {
            const slm__gelem *x = &g->elems[e];
            if (x->type <= SLM__GE_ALT) {
                alt_rule[a] = i;
                if (need[a] == 0) queue[nq++] = ~a; /* negative: an alternative done */
                a++;
                if (x->type == SLM__GE_END) break;
            } else if (x->type == SLM__GE_RULE) {
                need[a]++;
                occ_first[x->value + 1]++;
            } else if (what == 1) {
                need[a] = INT32_MAX / 2; /* a byte: never empty */
            } else {
                int k, empty = 1;
                for (k = 0; k < 8; k++) empty &= g->sets[x->value][k] == 0;
                if (empty) need[a] = INT32_MAX / 2;
            }
        }
    for (i = 0; i < g->n_rules; i++) occ_first[i + 1] += occ_first[i];
    for (i = 0, a = 0; i < g->n_rules; i++) /* the alternatives that mention each rule */
        for (e = g->rule_first[i];; e++) {
            const slm__gelem *x = &g->elems[e];
            if (x->type == SLM__GE_RULE) occ[occ_first[x->value]++] = a;
            if (x->type <= SLM__GE_ALT && (a++, x->type == SLM__GE_END)) break;
        }
    for (i = g->n_rules; i > 0; i--) occ_first[i] = occ_first[i - 1]; /* back to the starts */
    occ_first[0] = 0;
    while (head < nq) {
        int32_t item = queue[head++], r;
        if (item < 0) {
            r = alt_rule[~item];
            if (done[r]) continue;
            done[r] = 1;
            queue[nq++] = r;
        } else {
            for (i = occ_first[item]; i < occ_first[item + 1]; i++)
                if (--need[occ[i]] == 0) queue[nq++] = ~occ[i];
        }
    }
    ok = 1;
out:
    slm__free(&p->a, alt_rule);
    slm__free(&p->a, need);
    slm__free(&p->a, occ_first);
    slm__free(&p->a, occ);
    slm__free(&p->a, queue);
    return ok;
}

/* Appends " -> name" of rule r (generated rules by the name written in the
   text) unless the chain already ends with it. */
static size_t slm__g_chain(slm__gparser *p, char *buf, size_t cap, size_t n, int32_t r, int32_t *last) {
    int32_t o = p->rules[r].origin;
    if (o == *last) return n;
    *last = o;
    if (n < cap) slm__format(buf + n, cap - n, "%s%s", n ? " -> " : "", p->names + p->rules[o].name);
    while (n < cap && buf[n]) n++;
    return n;
}

/* A rule that reaches itself through first positions (every element before
   the reference can match the empty string): an error naming the cycle. */
static int slm__g_left_recursion(slm__gparser *p, const uint8_t *nullable) {
    typedef struct {
        int32_t rule, e, prefix_empty;
    } frame;
    slm_grammar *g = p->g;
    uint8_t *color = (uint8_t *)slm__calloc(&p->a, (size_t)g->n_rules, 1); /* 0 new, 1 on the stack, 2 done */
    frame *stack = (frame *)slm__calloc(&p->a, (size_t)g->n_rules, sizeof(frame));
    int32_t root, sp, i, ok = 0;
    if (!color || !stack) {
        slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
        goto out;
    }
    for (root = 0; root < g->n_rules; root++) {
        if (color[root]) continue;
        sp = 0;
        stack[sp].rule = root, stack[sp].e = g->rule_first[root], stack[sp++].prefix_empty = 1;
        color[root] = 1;
        while (sp) {
            frame *f = &stack[sp - 1];
            const slm__gelem *x = &g->elems[f->e++];
            int32_t to;
            if (x->type <= SLM__GE_ALT) {
                f->prefix_empty = 1;
                if (x->type == SLM__GE_END) {
                    color[f->rule] = 2;
                    sp--;
                }
                continue;
            }
            if (x->type == SLM__GE_BYTES || !f->prefix_empty) {
                f->prefix_empty = 0;
                continue;
            }
            to = x->value;
            f->prefix_empty = nullable[to];
            if (color[to] == 2) continue;
            if (color[to] == 1) {
                char chain[SLM__MSG_MAX];
                size_t n = 0;
                int32_t last = -1, start = 0;
                while (stack[start].rule != to) start++;
                for (i = start; i < sp; i++) n = slm__g_chain(p, chain, sizeof chain, n, stack[i].rule, &last);
                last = -1;
                n = slm__g_chain(p, chain, sizeof chain, n, to, &last);
                slm__g_fail(p, p->rules[p->rules[to].origin].def_pos, SLM_ERR_INVALID_ARG,
                            "rule '%s' is left-recursive: %s", p->names + p->rules[p->rules[to].origin].name, chain);
                goto out;
            }
            color[to] = 1;
            stack[sp].rule = to, stack[sp].e = g->rule_first[to], stack[sp++].prefix_empty = 1;
        }
    }
    ok = 1;
out:
    slm__free(&p->a, color);
    slm__free(&p->a, stack);
    return ok;
}

static void slm__g_parser_free(slm__gparser *p) {
    slm__free(&p->a, p->scratch);
    slm__free(&p->a, p->body);
    slm__free(&p->a, p->rules);
    slm__free(&p->a, p->names);
    slm__free(&p->a, p->htab);
    slm__free(&p->a, p->ranges);
    slm__free(&p->a, p->classes);
    slm__free(&p->a, p->xelems);
    slm__free(&p->a, p->stab);
    slm__free(&p->a, p->seqs);
}

SLM_API void slm_grammar_free(slm_grammar *g) {
    if (!g) return;
    slm__free(&g->alloc, g->rule_first);
    slm__free(&g->alloc, g->elems);
    slm__free(&g->alloc, g->sets);
    slm__free(&g->alloc, g->rule_names);
    slm__free(&g->alloc, g);
}

/* Parses, compiles and checks GBNF text into p->g. */
static int slm__g_compile(slm__gparser *p, const char *root) {
    slm_grammar *g = p->g;
    int32_t i, e, n_parsed, first_bad, (*cache)[5] = NULL; /* per class: {count, set indices} or {-1, rule} */
    uint8_t *flags = NULL;
    const uint8_t *u = (const uint8_t *)p->text;
    /* the text: bounded, valid UTF-8 */
    for (i = 0; u[i]; i++) {
        int n = u[i] < 0x80                   ? 1
                : u[i] >= 0xC2 && u[i] < 0xE0 ? 2
                : u[i] >= 0xE0 && u[i] < 0xF0 ? 3
                : u[i] >= 0xF0 && u[i] < 0xF5 ? 4
                                              : 0,
            k;
        if (i >= SLM__G_MAX_TEXT)
            return slm__g_fail(p, -1, SLM_ERR_INVALID_ARG, "grammar text longer than %d bytes", SLM__G_MAX_TEXT);
        for (k = 1; k < n; k++)
            if ((u[i + k] & 0xC0) != 0x80) n = 0;
        if (n == 3 && ((u[i] == 0xE0 && u[i + 1] < 0xA0) || (u[i] == 0xED && u[i + 1] > 0x9F))) n = 0;
        if (n == 4 && ((u[i] == 0xF0 && u[i + 1] < 0x90) || (u[i] == 0xF4 && u[i + 1] > 0x8F))) n = 0;
        if (!n) return slm__g_fail(p, i, SLM_ERR_INVALID_ARG, "invalid UTF-8 (byte 0x%x)", (unsigned)u[i]);
        i += n - 1;
    }
    p->len = i;
    slm__g_space(p, 1);
    while (p->text[p->pos])
        if (!slm__g_rule(p)) return 0;
    /* every rule defined, the root among them */
    for (i = 0; i < p->n_rules; i++)
        if (p->rules[i].count < 0)
            return slm__g_fail(p, p->rules[i].ref_pos, SLM_ERR_INVALID_ARG, "rule '%s' is used but never defined",
                               p->names + p->rules[i].name);
    for (i = 0; i < p->n_rules; i++)
        if (p->rules[i].origin == i && strcmp(p->names + p->rules[i].name, root) == 0) break;
    if (i == p->n_rules) return slm__g_fail(p, -1, SLM_ERR_INVALID_ARG, "the start rule '%s' is not defined", root);
    g->root = i;

    /* compile: code points to bytes; a class with several byte sequences becomes a rule of its own */
    n_parsed = p->n_rules;
    cache = (int32_t(*)[5])slm__calloc(&p->a, (size_t)p->n_classes + 1, sizeof *cache);
    if (!cache) return slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
    for (i = 0; i < p->n_classes; i++) cache[i][0] = -2; /* not compiled yet */
    if (!slm__g_grow(p, (void **)&g->rule_first, &p->cap_first, n_parsed, sizeof(int32_t), SLM__G_MAX_RULES, "rules"))
        goto fail;
    for (i = 0; i < n_parsed; i++) {
        g->rule_first[i] = g->n_elems;
        for (e = p->rules[i].first; e < p->rules[i].first + p->rules[i].count; e++) {
            slm__gelem x = p->body[e];
            if (x.type == SLM__GE_CHAR) {
                uint8_t b[4];
                int k, n = slm__g_utf8((uint32_t)x.value, b);
                for (k = 0; k < n; k++) {
                    uint32_t set[8] = { 0 };
                    int32_t s;
                    set[b[k] >> 5] = 1u << (b[k] & 31);
                    if ((s = slm__g_set(p, set)) < 0 ||
                        !slm__g_emit(p, &g->elems, &g->n_elems, &p->cap_elems, SLM__GE_BYTES, s))
                        goto fail;
                }
            } else if (x.type == SLM__GE_CLASS) {
                int32_t *c = cache[x.value], k;
                if (c[0] == -2) {
                    if (!slm__g_class_seqs(p, x.value)) goto fail;
                    if (p->n_seqs <= 1) {
                        static const uint32_t empty[8] = { 0 };
                        c[0] = p->n_seqs ? p->seqs[0].len : 1;
                        for (k = 0; k < c[0]; k++)
                            if ((c[1 + k] = slm__g_set(p, p->n_seqs ? p->seqs[0].set[k] : empty)) < 0) goto fail;
                    } else {
                        int32_t r = slm__g_new_rule(p, NULL, 0, i, p->rules[i].def_pos), q;
                        if (r < 0) goto fail;
                        p->rules[r].first = p->n_xelems;
                        for (q = 0; q < p->n_seqs; q++) {
                            for (k = 0; k < p->seqs[q].len; k++) {
                                int32_t s = slm__g_set(p, p->seqs[q].set[k]);
                                if (s < 0 ||
                                    !slm__g_emit(p, &p->xelems, &p->n_xelems, &p->cap_xelems, SLM__GE_BYTES, s))
                                    goto fail;
                            }
                            if (!slm__g_emit(p, &p->xelems, &p->n_xelems, &p->cap_xelems,
                                             q + 1 < p->n_seqs ? SLM__GE_ALT : SLM__GE_END, 0))
                                goto fail;
                        }
                        c[0] = -1;
                        c[1] = r;
                    }
                }
                if (c[0] == -1) {
                    if (!slm__g_emit(p, &g->elems, &g->n_elems, &p->cap_elems, SLM__GE_RULE, c[1])) goto fail;
                } else {
                    for (k = 0; k < c[0]; k++)
                        if (!slm__g_emit(p, &g->elems, &g->n_elems, &p->cap_elems, SLM__GE_BYTES, c[1 + k])) goto fail;
                }
            } else if (!slm__g_emit(p, &g->elems, &g->n_elems, &p->cap_elems, x.type, x.value)) {
                goto fail;
            }
        }
    }
    if (!slm__g_grow(p, (void **)&g->rule_first, &p->cap_first, p->n_rules, sizeof(int32_t), SLM__G_MAX_RULES, "rules"))
        goto fail;
    for (i = n_parsed; i < p->n_rules; i++) g->rule_first[i] = g->n_elems + p->rules[i].first;
    for (i = 0; i < p->n_xelems; i++)
        if (!slm__g_emit(p, &g->elems, &g->n_elems, &p->cap_elems, p->xelems[i].type, p->xelems[i].value)) goto fail;
    g->n_rules = p->n_rules;

    /* the checks, on every rule (reachable from the root or not, as llama.cpp checks for undefined ones) */
    flags = (uint8_t *)slm__calloc(&p->a, (size_t)g->n_rules, 1);
    if (!flags) {
        slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
        goto fail;
    }
    if (!slm__g_fixpoint(p, 0, flags)) goto fail;
    for (i = 0, first_bad = -1; i < g->n_rules; i++) {
        /* name the rule at fault: one that needs no other never-matching rule (root ::= a, a ::= "x" a: 'a') */
        int blame = !flags[i];
        for (e = g->rule_first[i]; blame && g->elems[e].type != SLM__GE_END; e++)
            if (g->elems[e].type == SLM__GE_RULE && g->elems[e].value != i && !flags[g->elems[e].value]) blame = 0;
        if (!flags[i] && first_bad < 0) first_bad = i;
        if (blame) break;
    }
    if (first_bad >= 0) {
        if (i == g->n_rules) i = first_bad;
        {
            int32_t o = p->rules[i].origin;
            if (o == i)
                slm__g_fail(p, p->rules[i].def_pos, SLM_ERR_INVALID_ARG, "rule '%s' can never match (no finite string)",
                            p->names + p->rules[i].name);
            else
                slm__g_fail(p, p->rules[i].def_pos, SLM_ERR_INVALID_ARG,
                            "rule '%s' (part of rule '%s') can never match (no finite string)",
                            p->names + p->rules[i].name, p->names + p->rules[o].name);
            goto fail;
        }
    }
    if (!slm__g_fixpoint(p, 1, flags) || !slm__g_left_recursion(p, flags)) goto fail;

    /* the names: one block, the pointers then the characters */
    g->rule_names = (char **)slm__alloc(&p->a, (size_t)g->n_rules * sizeof(char *) + (size_t)p->n_names);
    if (!g->rule_names) {
        slm__g_fail(p, -1, SLM_ERR_OOM, "out of memory");
        goto fail;
    }
    {
        char *chars = (char *)(g->rule_names + g->n_rules);
        memcpy(chars, p->names, (size_t)p->n_names);
        for (i = 0; i < g->n_rules; i++) g->rule_names[i] = chars + p->rules[i].name;
    }
    slm__free(&p->a, cache);
    slm__free(&p->a, flags);
    return 1;
fail:
    slm__free(&p->a, cache);
    slm__free(&p->a, flags);
    return 0;
}

/* The next section's converter, with slm_grammar_new's allocator. */
static slm_result slm__json_schema_to_gbnf(slm_allocator alloc, const char *schema, char *out, size_t out_cap,
                                           size_t *out_len, char *error, size_t error_cap);

SLM_API slm_result slm_grammar_new(slm_grammar **out, const slm_grammar_desc *desc) {
    slm__gparser p;
    char *converted = NULL;
    memset(&p, 0, sizeof p);
    p.any_class = -1;
    p.merge_budget = (int64_t)1 << 24;
    if (out) *out = NULL;
    if (desc) {
        p.error = desc->error;
        p.error_cap = desc->error_cap;
    }
    if (p.error && p.error_cap) p.error[0] = 0;
    p.text = "";
    if (!out || !desc) {
        slm__g_fail(&p, -1, SLM_ERR_INVALID_ARG, "slm_grammar_new: out and desc are required");
        return p.code;
    }
    if ((desc->gbnf != NULL) == (desc->json_schema != NULL)) {
        slm__g_fail(&p, -1, SLM_ERR_INVALID_ARG, "slm_grammar_new: set exactly one of desc.gbnf and desc.json_schema");
        return p.code;
    }
    if ((desc->alloc.alloc != NULL) != (desc->alloc.free != NULL)) {
        slm__g_fail(&p, -1, SLM_ERR_INVALID_ARG, "slm_grammar_new: desc.alloc.%s is set, desc.alloc.%s is not",
                    desc->alloc.alloc ? "alloc" : "free", desc->alloc.alloc ? "free" : "alloc");
        return p.code;
    }
    p.a = slm__allocator_or_default(desc->alloc);
    p.text = desc->gbnf;
    if (desc->json_schema) {
        size_t len = 0;
        slm_result r =
            slm__json_schema_to_gbnf(desc->alloc, desc->json_schema, NULL, 0, &len, desc->error, desc->error_cap);
        if (r != SLM_OK) return r;
        if (len >= SLM__G_MAX_TEXT) {
            slm__g_fail(&p, -1, SLM_ERR_INVALID_ARG, "the schema's grammar is longer than %d bytes", SLM__G_MAX_TEXT);
            return p.code;
        }
        converted = (char *)slm__alloc(&p.a, len + 1);
        if (!converted) {
            slm__g_fail(&p, -1, SLM_ERR_OOM, "out of memory");
            return p.code;
        }
        r = slm__json_schema_to_gbnf(desc->alloc, desc->json_schema, converted, len + 1, &len, desc->error,
                                     desc->error_cap);
        if (r != SLM_OK) {
            slm__free(&p.a, converted);
            return r;
        }
        converted[len] = 0;
        p.text = converted;
    }
    p.g = (slm_grammar *)slm__calloc(&p.a, 1, sizeof(slm_grammar));
    if (!p.g) {
        slm__g_fail(&p, -1, SLM_ERR_OOM, "out of memory");
    } else {
        p.g->alloc = p.a;
        slm__g_compile(&p, desc->root ? desc->root : "root");
    }
    slm__g_parser_free(&p);
    slm__free(&p.a, converted);
    if (p.code != SLM_OK) {
        slm_grammar_free(p.g);
        return p.code;
    }
    *out = p.g;
    return SLM_OK;
}

/* ---- JSON Schema to GBNF ---------------------------------------------------
   Owns slm_json_schema_to_gbnf and the JSON reader it needs.
   The reader (slm__json_*) is strict RFC 8259: no comments, no trailing
   commas, no duplicate names in an object, valid UTF-8, \u escapes with
   their surrogate pairs; a leading UTF-8 byte order mark is skipped. It
   recurses once per nesting level and refuses more than SLM__JSON_MAX_DEPTH,
   and texts over SLM__JSON_MAX_BYTES. Numbers stay text (as written): a
   schema's numbers are only compared or copied, and a huge one is no error.
   The converter follows llama.cpp's (common/json-schema-to-grammar.cpp):
   its rule bodies, its `space` rule, its rule names and its object layout,
   so that a schema gives the output an app gets from llama.cpp. It visits
   the schema once, then each $defs entry a $ref reaches (a work list, so
   that recursion stays within the schema's depth), then checks that every
   such entry can end (a fixpoint over the entries). */

#define SLM__JSON_MAX_BYTES (16u << 20) /* a schema is a few kilobytes */
#define SLM__JSON_MAX_DEPTH 64          /* arrays and objects inside each other */

enum {
    SLM__JSON_NULL,
    SLM__JSON_FALSE,
    SLM__JSON_TRUE,
    SLM__JSON_NUMBER,
    SLM__JSON_STRING,
    SLM__JSON_ARRAY,
    SLM__JSON_OBJECT
};

typedef struct slm__json_node {
    int32_t type;
    int32_t n;            /* ARRAY, OBJECT: members */
    int32_t first, next;  /* the first member, the next sibling; -1 = none */
    int32_t key, key_len; /* a member of an object: its name, in text */
    int32_t str, str_len; /* STRING: the decoded bytes; NUMBER: the text as written (both in text) */
    int32_t at;           /* byte offset in the source: the value's, a member's name's (for messages) */
    int32_t user;         /* 0, for the reader's user: the converter's marks */
} slm__json_node;

typedef struct slm__json {
    slm_allocator alloc;
    slm__json_node *nodes; /* nodes[0] is the document's value */
    int32_t n_nodes, cap_nodes;
    char *text; /* names, strings and numbers, each followed by a NUL (a string may hold NULs too) */
    int32_t n_text, cap_text;
    const char *src;
    size_t len, pos;
    int depth;
    slm_result result;
    char *error;
    size_t error_cap;
} slm__json;

/* Makes room for need elements of elem bytes in *p (capacity *cap). */
static int slm__json_grow(const slm_allocator *a, void **p, int32_t *cap, int64_t need, size_t elem) {
    int64_t n = *cap ? *cap : 16;
    void *q;
    if (need <= *cap) return 0;
    while (n < need) n *= 2;
    if (n > INT32_MAX) return -1;
    q = slm__alloc(a, (size_t)n * elem);
    if (!q) return -1;
    if (*p) memcpy(q, *p, (size_t)*cap * elem);
    slm__free(a, *p);
    *p = q;
    *cap = (int32_t)n;
    return 0;
}

/* Line and column (1-based; the column counts characters) of byte at. */
static int slm__json_fail(slm__json *j, size_t at, const char *what) {
    size_t i;
    int line = 1, col = 1;
    if (j->result != SLM_OK) return -1;
    for (i = 0; i < at && i < j->len; i++) {
        if (j->src[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)j->src[i] & 0xC0) != 0x80) {
            col++;
        }
    }
    slm__format(j->error, j->error_cap, "JSON line %d, column %d: %s", line, col, what);
    j->result = SLM_ERR_INVALID_ARG;
    return -1;
}

static int slm__json_oom(slm__json *j) {
    if (j->result == SLM_OK) slm__format(j->error, j->error_cap, "out of memory reading the JSON text");
    j->result = SLM_ERR_OOM;
    return -1;
}

static int slm__json_put(slm__json *j, const char *p, size_t n) {
    if ((int64_t)j->n_text + (int64_t)n + 1 > INT32_MAX ||
        slm__json_grow(&j->alloc, (void **)&j->text, &j->cap_text, (int64_t)j->n_text + (int64_t)n + 1, 1))
        return slm__json_oom(j);
    memcpy(j->text + j->n_text, p, n);
    j->n_text += (int32_t)n;
    return 0;
}

static int32_t slm__json_new_node(slm__json *j, int type) {
    slm__json_node *n;
    if (slm__json_grow(&j->alloc, (void **)&j->nodes, &j->cap_nodes, (int64_t)j->n_nodes + 1, sizeof *j->nodes))
        return slm__json_oom(j);
    n = &j->nodes[j->n_nodes];
    n->type = type;
    n->n = 0;
    n->first = n->next = -1;
    n->key = n->key_len = n->str = n->str_len = 0;
    n->at = (int32_t)j->pos;
    n->user = 0;
    return j->n_nodes++;
}

static void slm__json_skip_space(slm__json *j) {
    while (j->pos < j->len) {
        char c = j->src[j->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        j->pos++;
    }
}

static int slm__json_hex4(const char *p, size_t avail) {
    int v = 0, i;
    if (avail < 4) return -1;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    return v;
}

/* Length of the valid UTF-8 character at p (at most n bytes), 0 if invalid. */
static int slm__json_utf8_len(const unsigned char *p, size_t n) {
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF; /* no overlongs, no surrogates */
        return n >= 3 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF; /* up to U+10FFFF */
        return n >= 4 && p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* Reads the string at pos (at its quote) into text: *off and *len. */
static int slm__json_string(slm__json *j, int32_t *off, int32_t *len) {
    size_t start = j->pos;
    char msg[96];
    j->pos++;
    *off = j->n_text;
    for (;;) {
        unsigned char c;
        size_t run = j->pos;
        /* copy plain runs at once */
        while (run < j->len && (unsigned char)j->src[run] >= 0x20 && (unsigned char)j->src[run] < 0x80 &&
               j->src[run] != '"' && j->src[run] != '\\')
            run++;
        if (run > j->pos && slm__json_put(j, j->src + j->pos, run - j->pos)) return -1;
        j->pos = run;
        if (j->pos >= j->len) return slm__json_fail(j, start, "a string that never ends (no closing quote)");
        c = (unsigned char)j->src[j->pos];
        if (c == '"') break;
        if (c < 0x20) {
            slm__format(msg, sizeof msg, "control character U+%x in a string (write it as an escape)", (unsigned)c);
            return slm__json_fail(j, j->pos, msg);
        }
        if (c >= 0x80) {
            int n = slm__json_utf8_len((const unsigned char *)j->src + j->pos, j->len - j->pos);
            if (!n) return slm__json_fail(j, j->pos, "invalid UTF-8 in a string");
            if (slm__json_put(j, j->src + j->pos, (size_t)n)) return -1;
            j->pos += (size_t)n;
            continue;
        }
        /* an escape */
        if (j->pos + 1 >= j->len) return slm__json_fail(j, start, "a string that never ends (no closing quote)");
        {
            char e = j->src[j->pos + 1], b[4];
            const char *simple = strchr("\"\\/bfnrt", e);
            int cp, n;
            if (e && simple) {
                static const char decoded[] = "\"\\/\b\f\n\r\t";
                if (slm__json_put(j, &decoded[simple - "\"\\/bfnrt"], 1)) return -1;
                j->pos += 2;
                continue;
            }
            if (e != 'u')
                return slm__json_fail(j, j->pos,
                                      "unknown escape in a string (\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)");
            cp = slm__json_hex4(j->src + j->pos + 2, j->len - j->pos - 2);
            if (cp < 0) return slm__json_fail(j, j->pos, "\\u needs four hexadecimal digits");
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return slm__json_fail(j, j->pos, "a low surrogate (\\uDC00-\\uDFFF) without its high one");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int lo = -1;
                if (j->pos + 7 < j->len && j->src[j->pos + 6] == '\\' && j->src[j->pos + 7] == 'u')
                    lo = slm__json_hex4(j->src + j->pos + 8, j->len - j->pos - 8);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return slm__json_fail(j, j->pos, "a high surrogate (\\uD800-\\uDBFF) not followed by a low one");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->pos += 6;
            }
            j->pos += 6;
            if (cp < 0x80) {
                b[0] = (char)cp;
                n = 1;
            } else if (cp < 0x800) {
                b[0] = (char)(0xC0 | cp >> 6);
                b[1] = (char)(0x80 | (cp & 63));
                n = 2;
            } else if (cp < 0x10000) {
                b[0] = (char)(0xE0 | cp >> 12);
                b[1] = (char)(0x80 | (cp >> 6 & 63));
                b[2] = (char)(0x80 | (cp & 63));
                n = 3;
            } else {
                b[0] = (char)(0xF0 | cp >> 18);
                b[1] = (char)(0x80 | (cp >> 12 & 63));
                b[2] = (char)(0x80 | (cp >> 6 & 63));
                b[3] = (char)(0x80 | (cp & 63));
                n = 4;
            }
            if (slm__json_put(j, b, (size_t)n)) return -1;
        }
    }
    j->pos++;
    *len = j->n_text - *off;
    return slm__json_put(j, "", 1);
}

static int32_t slm__json_value(slm__json *j);

/* Arrays and objects: members linked in order; an object's member has its name. */
static int32_t slm__json_container(slm__json *j, int object) {
    int32_t node, last = -1;
    char close = object ? '}' : ']';
    if (++j->depth > SLM__JSON_MAX_DEPTH) {
        char msg[96];
        slm__format(msg, sizeof msg, "nesting deeper than %d levels", SLM__JSON_MAX_DEPTH);
        return slm__json_fail(j, j->pos, msg);
    }
    node = slm__json_new_node(j, object ? SLM__JSON_OBJECT : SLM__JSON_ARRAY);
    if (node < 0) return -1;
    j->pos++;
    slm__json_skip_space(j);
    if (j->pos < j->len && j->src[j->pos] == close) {
        j->pos++;
        j->depth--;
        return node;
    }
    for (;;) {
        int32_t key = 0, key_len = 0, member, key_at = (int32_t)j->pos;
        if (object) {
            if (j->pos >= j->len || j->src[j->pos] != '"')
                return slm__json_fail(j, j->pos, "expected a member name in double quotes");
            if (slm__json_string(j, &key, &key_len)) return -1;
            slm__json_skip_space(j);
            if (j->pos >= j->len || j->src[j->pos] != ':')
                return slm__json_fail(j, j->pos, "expected ':' after a member name");
            j->pos++;
        }
        member = slm__json_value(j);
        if (member < 0) return -1;
        j->nodes[member].key = key;
        j->nodes[member].key_len = key_len;
        if (object) j->nodes[member].at = key_at;
        if (last < 0)
            j->nodes[node].first = member;
        else
            j->nodes[last].next = member;
        last = member;
        j->nodes[node].n++;
        slm__json_skip_space(j);
        if (j->pos < j->len && j->src[j->pos] == ',') {
            j->pos++;
            slm__json_skip_space(j);
            if (j->pos < j->len && j->src[j->pos] == close) return slm__json_fail(j, j->pos, "a trailing comma");
            continue;
        }
        if (j->pos < j->len && j->src[j->pos] == close) break;
        return slm__json_fail(j, j->pos,
                              object ? "expected ',' or '}' in an object" : "expected ',' or ']' in an array");
    }
    j->pos++;
    j->depth--;
    return node;
}

static int32_t slm__json_number(slm__json *j) {
    size_t start = j->pos, p = j->pos;
    const char *s = j->src;
    int32_t node;
    if (p < j->len && s[p] == '-') p++;
    if (p >= j->len || s[p] < '0' || s[p] > '9') return slm__json_fail(j, p, "a number needs a digit here");
    if (s[p] == '0') {
        p++;
        if (p < j->len && s[p] >= '0' && s[p] <= '9') return slm__json_fail(j, start, "a number with a leading zero");
    } else {
        while (p < j->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    if (p < j->len && s[p] == '.') {
        p++;
        if (p >= j->len || s[p] < '0' || s[p] > '9')
            return slm__json_fail(j, p, "a digit must follow the decimal point");
        while (p < j->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    if (p < j->len && (s[p] == 'e' || s[p] == 'E')) {
        p++;
        if (p < j->len && (s[p] == '+' || s[p] == '-')) p++;
        if (p >= j->len || s[p] < '0' || s[p] > '9') return slm__json_fail(j, p, "an exponent needs a digit");
        while (p < j->len && s[p] >= '0' && s[p] <= '9') p++;
    }
    node = slm__json_new_node(j, SLM__JSON_NUMBER);
    if (node < 0) return -1;
    j->nodes[node].str = j->n_text;
    j->nodes[node].str_len = (int32_t)(p - start);
    if (slm__json_put(j, s + start, p - start) || slm__json_put(j, "", 1)) return -1;
    j->pos = p;
    return node;
}

static int32_t slm__json_value(slm__json *j) {
    char c;
    slm__json_skip_space(j);
    if (j->pos >= j->len) return slm__json_fail(j, j->pos, "expected a value, found the end of the text");
    c = j->src[j->pos];
    if (c == '{' || c == '[') return slm__json_container(j, c == '{');
    if (c == '"') {
        int32_t node = slm__json_new_node(j, SLM__JSON_STRING), off, len;
        if (node < 0 || slm__json_string(j, &off, &len)) return -1;
        j->nodes[node].str = off;
        j->nodes[node].str_len = len;
        return node;
    }
    if (c == '-' || (c >= '0' && c <= '9')) return slm__json_number(j);
    {
        static const char *const words[3] = { "null", "false", "true" };
        int w;
        for (w = 0; w < 3; w++) {
            size_t n = strlen(words[w]);
            if (j->len - j->pos >= n && memcmp(j->src + j->pos, words[w], n) == 0) {
                j->pos += n;
                return slm__json_new_node(j, w == 0 ? SLM__JSON_NULL : w == 1 ? SLM__JSON_FALSE : SLM__JSON_TRUE);
            }
        }
    }
    {
        char msg[96];
        if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7F)
            slm__format(msg, sizeof msg, "unexpected '%c' (not a JSON value)", c);
        else
            slm__format(msg, sizeof msg, "unexpected byte 0x%x (not a JSON value)", (unsigned)(unsigned char)c);
        return slm__json_fail(j, j->pos, msg);
    }
}

static uint32_t slm__json_hash(const char *p, size_t n, uint32_t seed) {
    uint32_t h = 2166136261u ^ seed;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* RFC 8259 leaves duplicate names to the reader: a schema with two "type"s
   means nothing clear, so they are refused, with one hash table over every
   member of every object (linear time whatever the input). */
static int slm__json_check_duplicates(slm__json *j) {
    int64_t members = 0;
    uint32_t cap = 16, mask, h;
    int32_t *slot, *owner, o, m;
    for (o = 0; o < j->n_nodes; o++)
        if (j->nodes[o].type == SLM__JSON_OBJECT) members += j->nodes[o].n;
    if (members < 2) return 0;
    while ((int64_t)cap < members * 2) cap *= 2;
    mask = cap - 1;
    slot = (int32_t *)slm__alloc(&j->alloc, (size_t)cap * sizeof *slot);
    owner = (int32_t *)slm__alloc(&j->alloc, (size_t)cap * sizeof *owner);
    if (!slot || !owner) {
        slm__free(&j->alloc, slot);
        slm__free(&j->alloc, owner);
        return slm__json_oom(j);
    }
    memset(slot, 0xFF, (size_t)cap * sizeof *slot);
    for (o = 0; o < j->n_nodes && j->result == SLM_OK; o++) {
        if (j->nodes[o].type != SLM__JSON_OBJECT) continue;
        for (m = j->nodes[o].first; m >= 0; m = j->nodes[m].next) {
            const slm__json_node *mn = &j->nodes[m];
            h = slm__json_hash(j->text + mn->key, (size_t)mn->key_len, (uint32_t)o * 2654435761u) & mask;
            while (slot[h] >= 0) {
                const slm__json_node *other = &j->nodes[slot[h]];
                if (owner[h] == o && other->key_len == mn->key_len &&
                    memcmp(j->text + other->key, j->text + mn->key, (size_t)mn->key_len) == 0) {
                    char msg[160];
                    slm__format(msg, sizeof msg, "the name \"%s\" appears twice in one object", j->text + mn->key);
                    slm__json_fail(j, (size_t)mn->at, msg);
                    break;
                }
                h = (h + 1) & mask;
            }
            if (j->result != SLM_OK) break;
            slot[h] = m;
            owner[h] = o;
        }
    }
    slm__free(&j->alloc, slot);
    slm__free(&j->alloc, owner);
    return j->result == SLM_OK ? 0 : -1;
}

static void slm__json_free(slm__json *j) {
    slm__free(&j->alloc, j->nodes);
    slm__free(&j->alloc, j->text);
    j->nodes = NULL;
    j->text = NULL;
}

/* Parses src[0..len) into j (nodes[0] the value). On failure the message,
   with line and column, is in error; call slm__json_free in every case. */
static slm_result slm__json_parse(slm__json *j, const char *src, size_t len, slm_allocator alloc, char *error,
                                  size_t error_cap) {
    memset(j, 0, sizeof *j);
    j->alloc = slm__allocator_or_default(alloc);
    j->src = src;
    j->len = len;
    j->error = error;
    j->error_cap = error_cap;
    if (len > SLM__JSON_MAX_BYTES) {
        char msg[96];
        slm__format(msg, sizeof msg, "longer than %u bytes", (unsigned)SLM__JSON_MAX_BYTES);
        slm__json_fail(j, 0, msg);
        return j->result;
    }
    if (len >= 3 && memcmp(src, "\xEF\xBB\xBF", 3) == 0) j->pos = 3;
    if (slm__json_value(j) < 0) return j->result;
    slm__json_skip_space(j);
    if (j->pos < j->len) {
        slm__json_fail(j, j->pos, "more text after the JSON value");
        return j->result;
    }
    slm__json_check_duplicates(j);
    return j->result;
}

/* The member of object obj named key (NUL-terminated), -1 when absent. */
static int32_t slm__json_member(const slm__json *j, int32_t obj, const char *key) {
    int32_t m;
    size_t n = strlen(key);
    if (obj < 0 || j->nodes[obj].type != SLM__JSON_OBJECT) return -1;
    for (m = j->nodes[obj].first; m >= 0; m = j->nodes[m].next)
        if ((size_t)j->nodes[m].key_len == n && memcmp(j->text + j->nodes[m].key, key, n) == 0) return m;
    return -1;
}

/* ---- the converter ---- */

#define SLM__SCHEMA_NAME_MAX  64 /* bytes of a name made from the schema's names (a suffix may follow) */
#define SLM__SCHEMA_REF_MAX   (SLM__SCHEMA_NAME_MAX + 48) /* any rule name, with its NUL */
#define SLM__SCHEMA_MAX_ITEMS 1000 /* minItems / maxItems: GBNF repetitions are expanded into rules */

enum { /* JSON types, as bits */
       SLM__JT_OBJECT = 1,
       SLM__JT_ARRAY = 2,
       SLM__JT_STRING = 4,
       SLM__JT_NUMBER = 8,
       SLM__JT_INTEGER = 16,
       SLM__JT_BOOLEAN = 32,
       SLM__JT_NULL = 64
};
static const char *const slm__jt_names[7] = { "object", "array", "string", "number", "integer", "boolean", "null" };

typedef struct slm__sbuf {
    char *p;
    int32_t n, cap;
} slm__sbuf;

typedef struct slm__schema_rule {
    int32_t name, name_len; /* in store */
    int32_t body, body_len; /* in store; body_len -1 while its $defs entry waits in the work list */
} slm__schema_rule;

typedef struct slm__schema_def { /* a $defs entry some $ref reaches */
    int32_t node, rule, ends;
    int32_t path; /* its JSON pointer, in store */
} slm__schema_def;

typedef struct slm__schema {
    slm_allocator alloc;
    slm__json js;
    slm__sbuf store;   /* rule names and bodies, def paths */
    slm__sbuf scratch; /* bodies being written, a stack: each visit appends and its caller takes it */
    slm__sbuf path;    /* the JSON pointer of the schema being visited, for messages */
    slm__schema_rule *rules;
    int32_t n_rules, cap_rules;
    int32_t *slots; /* open addressing over rule names: rule index or -1 */
    int32_t cap_slots;
    slm__schema_def *defs;
    int32_t n_defs, cap_defs, next_def;
    int32_t *ints; /* a stack of rule indices (an object's members) */
    int32_t n_ints, cap_ints;
    int32_t defs_node[2];  /* the root's "$defs" and "definitions", -1 when absent */
    int32_t *def_slots[2]; /* hash sets of their members, by name */
    uint32_t def_mask[2];
    slm_result result;
    char *error;
    size_t error_cap;
} slm__schema;

static int slm__schema_oom(slm__schema *c) {
    if (c->result == SLM_OK) slm__format(c->error, c->error_cap, "out of memory converting the schema");
    c->result = SLM_ERR_OOM;
    return -1;
}

/* An error about the schema at the current path: "what at /path". */
static int slm__schema_fail(slm__schema *c, const char *what) {
    if (c->result != SLM_OK) return -1;
    slm__format(c->error, c->error_cap, "%s at %s", what, c->path.n ? c->path.p : "the root");
    c->result = SLM_ERR_INVALID_ARG;
    return -1;
}

static int slm__sbuf_put(slm__schema *c, slm__sbuf *b, const char *p, size_t n) {
    if (c->result != SLM_OK) return -1;
    if ((int64_t)b->n + (int64_t)n + 1 > INT32_MAX ||
        slm__json_grow(&c->alloc, (void **)&b->p, &b->cap, (int64_t)b->n + (int64_t)n + 1, 1))
        return slm__schema_oom(c);
    memcpy(b->p + b->n, p, n);
    b->n += (int32_t)n;
    b->p[b->n] = 0; /* always a C string */
    return 0;
}
static int slm__sbuf_str(slm__schema *c, slm__sbuf *b, const char *s) { return slm__sbuf_put(c, b, s, strlen(s)); }
static void slm__sbuf_cut(slm__sbuf *b, int32_t n) {
    b->n = n;
    if (b->p) b->p[n] = 0;
}

/* Appends "/" and a name with JSON Pointer's ~0 and ~1 to b. */
static void slm__schema_pointer(slm__schema *c, slm__sbuf *b, const char *seg, size_t n) {
    size_t i;
    slm__sbuf_put(c, b, "/", 1);
    for (i = 0; i < n; i++) {
        if (seg[i] == '~')
            slm__sbuf_put(c, b, "~0", 2);
        else if (seg[i] == '/')
            slm__sbuf_put(c, b, "~1", 2);
        else
            slm__sbuf_put(c, b, seg + i, 1);
    }
}
static int32_t slm__schema_push(slm__schema *c, const char *seg, size_t n) {
    int32_t mark = c->path.n;
    slm__schema_pointer(c, &c->path, seg, n);
    return mark;
}

/* A name made of [a-zA-Z0-9-]: llama.cpp's rule names (other runs become '-'). */
static void slm__schema_name(char *dst, const char *prefix, const char *seg, size_t n) {
    size_t len = strlen(prefix), i;
    if (len > SLM__SCHEMA_NAME_MAX) len = SLM__SCHEMA_NAME_MAX;
    memmove(dst, prefix, len);
    if (len && len < SLM__SCHEMA_NAME_MAX) dst[len++] = '-';
    for (i = 0; i < n && len < SLM__SCHEMA_NAME_MAX; i++) {
        char ch = seg[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-';
        if (ok)
            dst[len++] = ch;
        else if (!len || dst[len - 1] != '-')
            dst[len++] = '-';
    }
    if (!len) dst[len++] = 'x';
    dst[len] = 0;
}

static const char *slm__schema_rule_name(const slm__schema *c, int32_t r) { return c->store.p + c->rules[r].name; }

static int32_t *slm__schema_slot(slm__schema *c, const char *name, size_t n) {
    uint32_t mask = (uint32_t)c->cap_slots - 1, h = slm__json_hash(name, n, 0) & mask;
    while (c->slots[h] >= 0) {
        const slm__schema_rule *r = &c->rules[c->slots[h]];
        if ((size_t)r->name_len == n && memcmp(c->store.p + r->name, name, n) == 0) break;
        h = (h + 1) & mask;
    }
    return &c->slots[h];
}

static int32_t slm__schema_find(slm__schema *c, const char *name) {
    if (!c->cap_slots) return -1; /* no rule yet: the first one's allocation failed */
    return *slm__schema_slot(c, name, strlen(name));
}

/* A new rule named exactly name (not yet in use) with body (NULL: pending). */
static int32_t slm__schema_new_rule(slm__schema *c, const char *name, const char *body, size_t body_len) {
    int32_t r, *slot;
    size_t n = strlen(name);
    if (c->result != SLM_OK) return -1;
    if ((int64_t)(c->n_rules + 1) * 2 > c->cap_slots) { /* rehash at half full */
        int32_t cap = c->cap_slots ? c->cap_slots * 2 : 64, i;
        int32_t *slots = (int32_t *)slm__alloc(&c->alloc, (size_t)cap * sizeof *slots);
        if (!slots) return slm__schema_oom(c);
        memset(slots, 0xFF, (size_t)cap * sizeof *slots);
        slm__free(&c->alloc, c->slots);
        c->slots = slots;
        c->cap_slots = cap;
        for (i = 0; i < c->n_rules; i++)
            *slm__schema_slot(c, slm__schema_rule_name(c, i), (size_t)c->rules[i].name_len) = i;
    }
    if (slm__json_grow(&c->alloc, (void **)&c->rules, &c->cap_rules, (int64_t)c->n_rules + 1, sizeof *c->rules))
        return slm__schema_oom(c);
    r = c->n_rules;
    c->rules[r].name = c->store.n;
    c->rules[r].name_len = (int32_t)n;
    if (slm__sbuf_put(c, &c->store, name, n + 1)) return -1;
    c->rules[r].body = c->store.n;
    c->rules[r].body_len = -1;
    if (body) {
        if (slm__sbuf_put(c, &c->store, body, body_len)) return -1;
        c->rules[r].body_len = (int32_t)body_len;
    }
    slot = slm__schema_slot(c, name, n);
    *slot = r;
    c->n_rules++;
    return r;
}

static int slm__schema_reserved(const char *name) {
    static const char *const reserved[] = { "root",         "space",  "boolean", "null", "integral-part",
                                            "decimal-part", "number", "integer", "char", "string",
                                            "value",        "object", "array" };
    size_t i;
    for (i = 0; i < sizeof reserved / sizeof *reserved; i++)
        if (strcmp(name, reserved[i]) == 0) return 1;
    return 0;
}

/* llama.cpp's _add_rule: the name (plus '-' when a built-in has it), or the
   rule of that name when its body is the same, else name0, name1, ... body
   NULL reserves a rule whose body comes later. */
static int32_t slm__schema_add_rule(slm__schema *c, const char *name, const char *body, size_t body_len) {
    char base[SLM__SCHEMA_REF_MAX], cand[SLM__SCHEMA_REF_MAX];
    int32_t r;
    unsigned i;
    if (c->result != SLM_OK) return -1;
    slm__format(base, sizeof base, "%s%s", name, slm__schema_reserved(name) ? "-" : "");
    slm__format(cand, sizeof cand, "%s", base);
    for (i = 0;; i++) {
        r = slm__schema_find(c, cand);
        if (r < 0) return slm__schema_new_rule(c, cand, body, body_len);
        if (body && c->rules[r].body_len == (int32_t)body_len &&
            memcmp(c->store.p + c->rules[r].body, body, body_len) == 0)
            return r;
        slm__format(cand, sizeof cand, "%s%u", base, i);
    }
}

/* The built-in rules, llama.cpp's PRIMITIVE_RULES (added on first use with what they use). */
static int32_t slm__schema_primitive(slm__schema *c, const char *name) {
    static const char *const prim[][3] = {
        { "space", "| \" \" | \"\\n\"{1,2} [ \\t]{0,20}", "" },
        { "boolean", "(\"true\" | \"false\")", "" },
        { "null", "\"null\"", "" },
        { "integral-part", "[0] | [1-9] [0-9]{0,15}", "" },
        { "decimal-part", "[0-9]{1,16}", "" },
        { "number", "(\"-\"? integral-part) (\".\" decimal-part)? ([eE] [-+]? integral-part)?",
          "integral-part decimal-part" },
        { "integer", "(\"-\"? integral-part)", "integral-part" },
        { "char", "[^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4})", "" },
        { "string", "\"\\\"\" char* \"\\\"\"", "char" },
        { "value", "object | array | string | number | boolean | null", "object array string number boolean null" },
        { "object", "\"{\" space ( string \":\" space value (\",\" space string \":\" space value)* )? space \"}\"",
          "space string value" },
        { "array", "\"[\" space ( value (\",\" space value)* )? space \"]\"", "space value" },
    };
    size_t i;
    int32_t r = slm__schema_find(c, name);
    if (r >= 0 || c->result != SLM_OK) return r;
    for (i = 0; i < sizeof prim / sizeof *prim; i++) {
        const char *dep;
        if (strcmp(prim[i][0], name) != 0) continue;
        r = slm__schema_new_rule(c, name, prim[i][1], strlen(prim[i][1]));
        for (dep = prim[i][2]; *dep;) { /* dependencies, space-separated */
            char d[32];
            size_t n = strcspn(dep, " ");
            memcpy(d, dep, n);
            d[n] = 0;
            slm__schema_primitive(c, d);
            dep += n + (dep[n] == ' ');
        }
        return r;
    }
    return -1;
}

/* Appends the name of a built-in rule to scratch. */
static int slm__schema_put_primitive(slm__schema *c, const char *name) {
    if (slm__schema_primitive(c, name) < 0) return -1;
    return slm__sbuf_str(c, &c->scratch, name);
}

/* Appends to scratch a GBNF string literal of n bytes at c->scratch.p + from
   (valid UTF-8): quotes, backslashes, and control bytes escaped. */
static int slm__schema_literal_of(slm__schema *c, int32_t from, int32_t n) {
    int32_t i;
    char esc[8];
    if (slm__sbuf_put(c, &c->scratch, "\"", 1)) return -1;
    for (i = 0; i < n && c->result == SLM_OK; i++) {
        unsigned char ch = (unsigned char)c->scratch.p[from + i];
        if (ch == '"' || ch == '\\')
            slm__format(esc, sizeof esc, "\\%c", ch);
        else if (ch == '\n')
            slm__format(esc, sizeof esc, "\\n");
        else if (ch == '\r')
            slm__format(esc, sizeof esc, "\\r");
        else if (ch == '\t')
            slm__format(esc, sizeof esc, "\\t");
        else if (ch < 0x20 || ch == 0x7F)
            slm__format(esc, sizeof esc, "\\x%c%c", "0123456789ABCDEF"[ch >> 4], "0123456789ABCDEF"[ch & 15]);
        else {
            esc[0] = (char)ch;
            esc[1] = 0;
        }
        slm__sbuf_str(c, &c->scratch, esc);
    }
    return slm__sbuf_put(c, &c->scratch, "\"", 1);
}

/* Appends to scratch a JSON string (quoted, escaped as compact JSON writers do). */
static int slm__schema_json_string(slm__schema *c, const char *s, int32_t n) {
    int32_t i;
    slm__sbuf_put(c, &c->scratch, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\')
            slm__format(esc, sizeof esc, "\\%c", ch);
        else if (ch == '\b')
            slm__format(esc, sizeof esc, "\\b");
        else if (ch == '\f')
            slm__format(esc, sizeof esc, "\\f");
        else if (ch == '\n')
            slm__format(esc, sizeof esc, "\\n");
        else if (ch == '\r')
            slm__format(esc, sizeof esc, "\\r");
        else if (ch == '\t')
            slm__format(esc, sizeof esc, "\\t");
        else if (ch < 0x20)
            slm__format(esc, sizeof esc, "\\u00%c%c", "0123456789abcdef"[ch >> 4], "0123456789abcdef"[ch & 15]);
        else {
            esc[0] = (char)ch;
            esc[1] = 0;
        }
        slm__sbuf_str(c, &c->scratch, esc);
    }
    return slm__sbuf_put(c, &c->scratch, "\"", 1);
}

/* Appends to scratch the compact JSON text of a value (numbers as written). */
static int slm__schema_dump(slm__schema *c, int32_t v) {
    const slm__json_node *n = &c->js.nodes[v];
    int32_t m;
    switch (n->type) {
    case SLM__JSON_NULL: return slm__sbuf_str(c, &c->scratch, "null");
    case SLM__JSON_FALSE: return slm__sbuf_str(c, &c->scratch, "false");
    case SLM__JSON_TRUE: return slm__sbuf_str(c, &c->scratch, "true");
    case SLM__JSON_NUMBER: return slm__sbuf_put(c, &c->scratch, c->js.text + n->str, (size_t)n->str_len);
    case SLM__JSON_STRING: return slm__schema_json_string(c, c->js.text + n->str, n->str_len);
    default: break;
    }
    slm__sbuf_str(c, &c->scratch, n->type == SLM__JSON_ARRAY ? "[" : "{");
    for (m = n->first; m >= 0; m = c->js.nodes[m].next) {
        if (m != n->first) slm__sbuf_str(c, &c->scratch, ",");
        if (n->type == SLM__JSON_OBJECT) {
            slm__schema_json_string(c, c->js.text + c->js.nodes[m].key, c->js.nodes[m].key_len);
            slm__sbuf_str(c, &c->scratch, ":");
        }
        slm__schema_dump(c, m);
    }
    return slm__sbuf_str(c, &c->scratch, n->type == SLM__JSON_ARRAY ? "]" : "}");
}

/* Appends the GBNF literal matching exactly the compact JSON text of v. */
static int slm__schema_const(slm__schema *c, int32_t v) {
    int32_t mark = c->scratch.n, n, lit;
    if (slm__schema_dump(c, v)) return -1;
    n = c->scratch.n - mark;
    lit = c->scratch.n;
    if (slm__schema_literal_of(c, mark, n)) return -1;
    memmove(c->scratch.p + mark, c->scratch.p + lit, (size_t)(c->scratch.n - lit));
    slm__sbuf_cut(&c->scratch, mark + (c->scratch.n - lit));
    return 0;
}

/* Whether a JSON number (its text) is an integer: "2", "2.0", "2e3", "0e-5", not "2.5" or "25e-1":
   every digit the exponent leaves right of the point is a zero. */
static int slm__schema_integral(const char *s, int32_t n) {
    int32_t i = 0, n_int = 0, k = 0;
    long long exp = 0, point;
    int neg = 0;
    if (s[0] == '-') i++;
    while (i + n_int < n && s[i + n_int] >= '0' && s[i + n_int] <= '9') n_int++;
    {
        const char *e = (const char *)memchr(s, 'e', (size_t)n);
        if (!e) e = (const char *)memchr(s, 'E', (size_t)n);
        if (e) {
            e++;
            if (*e == '+' || *e == '-') neg = *e++ == '-';
            for (; e < s + n; e++)
                if (exp < 100000000) exp = exp * 10 + (*e - '0');
        }
    }
    point = n_int + (neg ? -exp : exp);
    for (; i < n && s[i] != 'e' && s[i] != 'E'; i++) {
        if (s[i] == '.') continue;
        if (k >= point && s[i] != '0') return 0;
        k++;
    }
    return 1;
}

static int slm__schema_type_of(const slm__schema *c, int32_t v) {
    const slm__json_node *n = &c->js.nodes[v];
    switch (n->type) {
    case SLM__JSON_NULL: return SLM__JT_NULL;
    case SLM__JSON_FALSE:
    case SLM__JSON_TRUE: return SLM__JT_BOOLEAN;
    case SLM__JSON_NUMBER:
        return SLM__JT_NUMBER | (slm__schema_integral(c->js.text + n->str, n->str_len) ? SLM__JT_INTEGER : 0);
    case SLM__JSON_STRING: return SLM__JT_STRING;
    case SLM__JSON_ARRAY: return SLM__JT_ARRAY;
    default: return SLM__JT_OBJECT;
    }
}

/* A count keyword's value: a non-negative integer up to SLM__SCHEMA_MAX_ITEMS. */
static int slm__schema_count(slm__schema *c, int32_t v, const char *kw, int *out) {
    const slm__json_node *n = &c->js.nodes[v];
    const char *s = c->js.text + n->str;
    char msg[160];
    long long value;
    if (n->type != SLM__JSON_NUMBER || !(slm__schema_type_of(c, v) & SLM__JT_INTEGER) || s[0] == '-') {
        slm__format(msg, sizeof msg, "'%s' must be a non-negative integer", kw);
        return slm__schema_fail(c, msg);
    }
    {
        double d = strtod(s, NULL); /* an integer, possibly written 2.0 or 1e2 */
        value = d > SLM__SCHEMA_MAX_ITEMS ? SLM__SCHEMA_MAX_ITEMS + 1 : (long long)d;
    }
    if (value > SLM__SCHEMA_MAX_ITEMS) {
        slm__format(msg, sizeof msg, "'%s' %s is more than this converter supports (%d)", kw, s, SLM__SCHEMA_MAX_ITEMS);
        return slm__schema_fail(c, msg);
    }
    *out = (int)value;
    return 0;
}

/* The keywords of one schema object (member nodes, -1 when absent). */
typedef struct slm__schema_kw {
    int32_t type, properties, required, additional, items, min_items, max_items, enum_, const_, ref;
} slm__schema_kw;

static int slm__schema_key_is(const slm__schema *c, int32_t m, const char *kw) {
    size_t n = strlen(kw);
    return (size_t)c->js.nodes[m].key_len == n && memcmp(c->js.text + c->js.nodes[m].key, kw, n) == 0;
}

/* Sorts the members of schema object node into kw; complains about the rest. */
static int slm__schema_keywords(slm__schema *c, int32_t node, slm__schema_kw *kw) {
    static const char *const ignored[] = {
        "description", "title", "$schema", "$id", "default", "examples", "$comment"
    };
    int32_t m;
    kw->type = kw->properties = kw->required = kw->additional = kw->items = -1;
    kw->min_items = kw->max_items = kw->enum_ = kw->const_ = kw->ref = -1;
    for (m = c->js.nodes[node].first; m >= 0; m = c->js.nodes[m].next) {
        size_t i;
        int known = 0;
        char msg[160];
        for (i = 0; i < sizeof ignored / sizeof *ignored; i++) known |= slm__schema_key_is(c, m, ignored[i]);
        if (known) continue;
        if (slm__schema_key_is(c, m, "type"))
            kw->type = m;
        else if (slm__schema_key_is(c, m, "properties"))
            kw->properties = m;
        else if (slm__schema_key_is(c, m, "required"))
            kw->required = m;
        else if (slm__schema_key_is(c, m, "additionalProperties"))
            kw->additional = m;
        else if (slm__schema_key_is(c, m, "items"))
            kw->items = m;
        else if (slm__schema_key_is(c, m, "minItems"))
            kw->min_items = m;
        else if (slm__schema_key_is(c, m, "maxItems"))
            kw->max_items = m;
        else if (slm__schema_key_is(c, m, "enum"))
            kw->enum_ = m;
        else if (slm__schema_key_is(c, m, "const"))
            kw->const_ = m;
        else if (slm__schema_key_is(c, m, "$ref"))
            kw->ref = m;
        else if (slm__schema_key_is(c, m, "$defs") || slm__schema_key_is(c, m, "definitions")) {
            if (node != 0) {
                slm__format(msg, sizeof msg, "'%s' is supported at the root only", c->js.text + c->js.nodes[m].key);
                return slm__schema_fail(c, msg);
            }
        } else {
            slm__format(msg, sizeof msg, "unsupported keyword '%s'", c->js.text + c->js.nodes[m].key);
            return slm__schema_fail(c, msg);
        }
    }
    return 0;
}

/* The types of kw.type in order (count returned), or -1 after an error. */
static int slm__schema_types(slm__schema *c, const slm__schema_kw *kw, int *types) {
    int n = 0, mask = 0, k;
    int32_t v, first;
    char msg[160];
    if (kw->type < 0) return 0;
    v = kw->type;
    first = c->js.nodes[v].type == SLM__JSON_ARRAY ? c->js.nodes[v].first : v;
    if (c->js.nodes[v].type == SLM__JSON_ARRAY && first < 0)
        return slm__schema_fail(c, "'type' is an empty array (no value has no type)");
    for (v = first; v >= 0; v = c->js.nodes[v].next) {
        const slm__json_node *t = &c->js.nodes[v];
        if (t->type != SLM__JSON_STRING) return slm__schema_fail(c, "'type' must be a string or an array of strings");
        for (k = 0; k < 7; k++)
            if ((size_t)t->str_len == strlen(slm__jt_names[k]) &&
                memcmp(c->js.text + t->str, slm__jt_names[k], (size_t)t->str_len) == 0)
                break;
        if (k == 7) {
            slm__format(msg, sizeof msg, "unknown type '%s'", c->js.text + t->str);
            return slm__schema_fail(c, msg);
        }
        if (mask & (1 << k)) {
            slm__format(msg, sizeof msg, "type '%s' appears twice in 'type'", slm__jt_names[k]);
            return slm__schema_fail(c, msg);
        }
        mask |= 1 << k;
        types[n++] = 1 << k;
        if (c->js.nodes[kw->type].type != SLM__JSON_ARRAY) break;
    }
    return n;
}

/* A string of a JSON node: a member's name (by_key) or a string value. */
static const char *slm__schema_str(const slm__schema *c, int32_t m, int by_key, int32_t *n) {
    *n = by_key ? c->js.nodes[m].key_len : c->js.nodes[m].str_len;
    return c->js.text + (by_key ? c->js.nodes[m].key : c->js.nodes[m].str);
}

/* Adds member m to a hash set of members (slots[mask + 1], -1 = free);
   returns the member already there with the same string, else -1. */
static int32_t slm__schema_set_put(const slm__schema *c, int32_t *slots, uint32_t mask, int32_t m, int by_key) {
    int32_t n, k;
    const char *p = slm__schema_str(c, m, by_key, &n), *q;
    uint32_t h = slm__json_hash(p, (size_t)n, 0) & mask;
    for (; slots[h] >= 0; h = (h + 1) & mask) {
        q = slm__schema_str(c, slots[h], by_key, &k);
        if (k == n && memcmp(p, q, (size_t)n) == 0) return slots[h];
    }
    if (m >= 0) slots[h] = m;
    return -1;
}

/* The member in the set whose string is p[0..n), -1 when none. */
static int32_t slm__schema_set_get(const slm__schema *c, const int32_t *slots, uint32_t mask, const char *p, int32_t n,
                                   int by_key) {
    uint32_t h = slm__json_hash(p, (size_t)n, 0) & mask;
    int32_t k;
    for (; slots[h] >= 0; h = (h + 1) & mask) {
        const char *q = slm__schema_str(c, slots[h], by_key, &k);
        if (k == n && memcmp(p, q, (size_t)n) == 0) return slots[h];
    }
    return -1;
}

/* Finds the $defs entry a "$ref" string names: its member node, or -1. */
static int32_t slm__schema_resolve(slm__schema *c, int32_t ref) {
    const slm__json_node *r = &c->js.nodes[ref];
    const char *s = c->js.text + r->str, *name;
    int which;
    int32_t i, len, mark = c->scratch.n, found;
    if (r->type != SLM__JSON_STRING) return -1;
    if (r->user) return r->user - 1; /* resolved before */
    if (strncmp(s, "#/$defs/", 8) == 0)
        which = 0, name = s + 8;
    else if (strncmp(s, "#/definitions/", 14) == 0)
        which = 1, name = s + 14;
    else
        return -1;
    len = r->str_len - (int32_t)(name - s);
    if (memchr(name, '/', (size_t)len) || !c->def_slots[which]) return -1;
    for (i = 0; i < len; i++) { /* JSON Pointer's escapes undone: ~0 is '~', ~1 is '/' */
        char ch = name[i];
        if (ch == '~' && i + 1 < len && (name[i + 1] == '0' || name[i + 1] == '1')) ch = name[++i] == '0' ? '~' : '/';
        if (slm__sbuf_put(c, &c->scratch, &ch, 1)) return -1;
    }
    found =
        slm__schema_set_get(c, c->def_slots[which], c->def_mask[which], c->scratch.p + mark, c->scratch.n - mark, 1);
    slm__sbuf_cut(&c->scratch, mark);
    c->js.nodes[ref].user = found + 1;
    return found;
}

/* The $defs entry at node target (its index in c->defs, kept in the node's user bits 1-31), -1 for none yet. */
static int32_t slm__schema_def_of(const slm__schema *c, int32_t target) {
    return target < 0 ? -1 : (c->js.nodes[target].user >> 1) - 1;
}

/* Appends the name of the rule of a $ref's target (reserved on first use, its body made from the work list). */
static int slm__schema_ref(slm__schema *c, int32_t ref) {
    int32_t target = slm__schema_resolve(c, ref), d;
    char msg[SLM__MSG_MAX];
    if (c->js.nodes[ref].type != SLM__JSON_STRING) return slm__schema_fail(c, "'$ref' must be a string");
    if (target < 0) {
        const char *s = c->js.text + c->js.nodes[ref].str;
        if (strncmp(s, "#/$defs/", 8) == 0 || strncmp(s, "#/definitions/", 14) == 0)
            slm__format(msg, sizeof msg, "$ref '%s' points to nothing", s);
        else
            slm__format(msg, sizeof msg, "unsupported $ref '%s' (only #/$defs/NAME and #/definitions/NAME)", s);
        return slm__schema_fail(c, msg);
    }
    d = slm__schema_def_of(c, target);
    if (d < 0) {
        char name[SLM__SCHEMA_NAME_MAX + 2];
        int32_t r;
        const slm__json_node *t = &c->js.nodes[target];
        slm__schema_name(name, "", c->js.text + t->key, (size_t)t->key_len);
        r = slm__schema_add_rule(c, name, NULL, 0);
        if (r < 0 ||
            slm__json_grow(&c->alloc, (void **)&c->defs, &c->cap_defs, (int64_t)c->n_defs + 1, sizeof *c->defs))
            return slm__schema_oom(c);
        d = c->n_defs++;
        c->defs[d].node = target;
        c->defs[d].rule = r;
        c->defs[d].ends = 0;
        c->js.nodes[target].user |= (d + 1) << 1;
        c->defs[d].path = c->store.n; /* for messages: /$defs/NAME */
        if (c->js.text[c->js.nodes[ref].str + 2] == '$')
            slm__schema_pointer(c, &c->store, "$defs", 5);
        else
            slm__schema_pointer(c, &c->store, "definitions", 11);
        slm__schema_pointer(c, &c->store, c->js.text + t->key, (size_t)t->key_len);
        slm__sbuf_put(c, &c->store, "", 1);
    }
    return slm__sbuf_str(c, &c->scratch, slm__schema_rule_name(c, c->defs[d].rule));
}

static int slm__schema_visit(slm__schema *c, int32_t node, const char *name);

/* Turns the body at scratch[mark..] into a reference: kept when it is one
   rule's name already, else a rule named after name. */
static int slm__schema_to_rule(slm__schema *c, int32_t mark, const char *name) {
    int32_t i, n = c->scratch.n - mark, r;
    const char *b = c->scratch.p + mark;
    int bare = n > 0 && n < SLM__SCHEMA_REF_MAX;
    if (c->result != SLM_OK) return -1;
    for (i = 0; i < n && bare; i++)
        bare =
            (b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '-';
    if (bare) return 0;
    r = slm__schema_add_rule(c, name, b, (size_t)n);
    if (r < 0) return -1;
    slm__sbuf_cut(&c->scratch, mark);
    return slm__sbuf_str(c, &c->scratch, slm__schema_rule_name(c, r));
}

/* The reference for the schema at node (at path + seg), copied to ref. */
static int slm__schema_sub(slm__schema *c, int32_t node, const char *seg1, const char *seg2, size_t seg2_len,
                           const char *name, char *ref, size_t ref_cap) {
    int32_t mark = c->scratch.n, pmark = slm__schema_push(c, seg1, strlen(seg1));
    if (seg2) slm__schema_pointer(c, &c->path, seg2, seg2_len);
    if (slm__schema_visit(c, node, name) || slm__schema_to_rule(c, mark, name)) return -1;
    slm__format(ref, ref_cap, "%s", c->scratch.p + mark);
    slm__sbuf_cut(&c->scratch, mark);
    slm__sbuf_cut(&c->path, pmark);
    return 0;
}

/* llama.cpp's build_repetition with a separator: item, count in [min, max] (max -1: unbounded). */
static void slm__schema_repeat(slm__schema *c, const char *item, int min, int max) {
    int inner_min = min ? min - 1 : 0, inner_max = max < 0 ? -1 : max - 1;
    char buf[SLM__SCHEMA_REF_MAX + 32];
    if (max == 0) return;
    if (min == 0 && max == 1) {
        slm__format(buf, sizeof buf, "%s?", item);
        slm__sbuf_str(c, &c->scratch, buf);
        return;
    }
    slm__format(buf, sizeof buf, "%s%s", min == 0 ? "( " : "", item);
    slm__sbuf_str(c, &c->scratch, buf);
    if (inner_max != 0) {
        slm__format(buf, sizeof buf, " (\",\" space %s)", item);
        slm__sbuf_str(c, &c->scratch, buf);
        if (inner_min == 0 && inner_max == 1)
            slm__format(buf, sizeof buf, "?");
        else if (inner_min == 1 && inner_max < 0)
            slm__format(buf, sizeof buf, "+");
        else if (inner_min == 0 && inner_max < 0)
            slm__format(buf, sizeof buf, "*");
        else if (inner_max < 0)
            slm__format(buf, sizeof buf, "{%d,}", inner_min);
        else
            slm__format(buf, sizeof buf, "{%d,%d}", inner_min, inner_max);
        slm__sbuf_str(c, &c->scratch, buf);
    }
    if (min == 0) slm__sbuf_str(c, &c->scratch, " )?");
}

/* Checks "required" (strings, each once, each a property: no other name
   may appear) and marks the required properties' nodes (user bit 0), with
   hash sets so that long lists cost linear time. */
static int slm__schema_mark_required(slm__schema *c, const slm__schema_kw *kw) {
    int32_t req = kw->required, props = kw->properties, m, *slots = NULL;
    uint32_t cap = 8, mask;
    char msg[SLM__MSG_MAX];
    if (req < 0) return 0;
    if (c->js.nodes[req].type != SLM__JSON_ARRAY) return slm__schema_fail(c, "'required' must be an array of strings");
    while (cap < 2 * (uint32_t)c->js.nodes[req].n + 2 * (uint32_t)(props >= 0 ? c->js.nodes[props].n : 0)) cap *= 2;
    mask = cap / 2 - 1; /* two sets of cap / 2 slots: the names required, the properties */
    slots = (int32_t *)slm__alloc(&c->alloc, (size_t)cap * sizeof *slots);
    if (!slots) return slm__schema_oom(c);
    memset(slots, 0xFF, (size_t)cap * sizeof *slots);
    for (m = props >= 0 ? c->js.nodes[props].first : -1; m >= 0; m = c->js.nodes[m].next)
        slm__schema_set_put(c, slots + cap / 2, mask, m, 1);
    for (m = c->js.nodes[req].first; m >= 0 && c->result == SLM_OK; m = c->js.nodes[m].next) {
        int32_t prop;
        if (c->js.nodes[m].type != SLM__JSON_STRING) {
            slm__schema_fail(c, "'required' must be an array of strings");
            break;
        }
        if (slm__schema_set_put(c, slots, mask, m, 0) >= 0) {
            slm__format(msg, sizeof msg, "'required' names '%s' twice", c->js.text + c->js.nodes[m].str);
            slm__schema_fail(c, msg);
            break;
        }
        {
            int32_t n;
            const char *p = slm__schema_str(c, m, 0, &n);
            prop = slm__schema_set_get(c, slots + cap / 2, mask, p, n, 1);
        }
        if (prop < 0) {
            slm__format(msg, sizeof msg, "required property '%s' is not among the properties (no other is allowed)",
                        c->js.text + c->js.nodes[m].str);
            slm__schema_fail(c, msg);
            break;
        }
        c->js.nodes[prop].user |= 1;
    }
    slm__free(&c->alloc, slots);
    return c->result == SLM_OK ? 0 : -1;
}

/* An object: llama.cpp's layout. Required properties first, in the
   schema's order, then the optional ones in theirs: any subset of them, in
   order, each after a comma (a chain of "-rest" rules). */
static int slm__schema_object(slm__schema *c, const slm__schema_kw *kw, const char *name) {
    int32_t props = kw->properties, add = kw->additional, m, base = c->n_ints, i, n_opt = 0, n_req = 0;
    char sub[SLM__SCHEMA_REF_MAX];
    slm__schema_primitive(c, "space");
    if (props >= 0 && c->js.nodes[props].type != SLM__JSON_OBJECT)
        return slm__schema_fail(c, "'properties' must be an object");
    if (add >= 0 && c->js.nodes[add].type != SLM__JSON_TRUE && c->js.nodes[add].type != SLM__JSON_FALSE &&
        c->js.nodes[add].type != SLM__JSON_OBJECT)
        return slm__schema_fail(c, "'additionalProperties' must be a boolean or a schema");
    if (slm__schema_mark_required(c, kw)) return -1;
    if (props < 0 || c->js.nodes[props].n == 0) {
        char value[SLM__SCHEMA_REF_MAX], kv[2 * SLM__SCHEMA_REF_MAX + 64];
        int32_t r;
        /* "properties": {} closes the object as any "properties" does */
        if ((add >= 0 && c->js.nodes[add].type == SLM__JSON_FALSE) || (add < 0 && props >= 0))
            return slm__sbuf_str(c, &c->scratch, "\"{\" space \"}\"");
        if (add < 0 || c->js.nodes[add].type == SLM__JSON_TRUE || c->js.nodes[add].n == 0)
            return slm__schema_put_primitive(c, "object");
        /* a map: any names, each value of the additionalProperties schema */
        slm__schema_name(sub, name, "additional-value", 16);
        if (slm__schema_sub(c, add, "additionalProperties", NULL, 0, sub, value, sizeof value)) return -1;
        slm__schema_primitive(c, "string");
        slm__format(kv, sizeof kv, "string \":\" space %s", value);
        slm__schema_name(sub, name, "additional-kv", 13);
        r = slm__schema_add_rule(c, sub, kv, strlen(kv));
        if (r < 0) return -1;
        slm__format(kv, sizeof kv, "\"{\" space ( %s ( \",\" space %s )* )? space \"}\"", slm__schema_rule_name(c, r),
                    slm__schema_rule_name(c, r));
        return slm__sbuf_str(c, &c->scratch, kv);
    }
    if (add >= 0 && c->js.nodes[add].type != SLM__JSON_FALSE) {
        int32_t pmark = slm__schema_push(c, "additionalProperties", 20);
        slm__schema_fail(c, "additionalProperties other than false beside properties are not supported (the names "
                            "of the additional ones would have to exclude the properties')");
        slm__sbuf_cut(&c->path, pmark);
        return -1;
    }
    /* each property: its value's rule, then its "-kv" rule; kept on the ints stack (rule, member, required) */
    for (m = c->js.nodes[props].first; m >= 0; m = c->js.nodes[m].next) {
        const char *key = c->js.text + c->js.nodes[m].key;
        int32_t key_len = c->js.nodes[m].key_len, mark, r;
        char value[SLM__SCHEMA_REF_MAX];
        slm__schema_name(sub, name, key, (size_t)key_len);
        if (slm__schema_sub(c, m, "properties", key, (size_t)key_len, sub, value, sizeof value)) return -1;
        mark = c->scratch.n;
        slm__schema_json_string(c, key, key_len);
        {
            int32_t lit = c->scratch.n;
            slm__schema_literal_of(c, mark, lit - mark);
            if (c->result != SLM_OK) return -1;
            memmove(c->scratch.p + mark, c->scratch.p + lit, (size_t)(c->scratch.n - lit));
            slm__sbuf_cut(&c->scratch, mark + (c->scratch.n - lit));
        }
        slm__sbuf_str(c, &c->scratch, " space \":\" space ");
        slm__sbuf_str(c, &c->scratch, value);
        slm__schema_name(sub, name, key, (size_t)key_len);
        slm__format(sub + strlen(sub), sizeof sub - strlen(sub), "-kv");
        if (c->result != SLM_OK) return -1;
        r = slm__schema_add_rule(c, sub, c->scratch.p + mark, (size_t)(c->scratch.n - mark));
        slm__sbuf_cut(&c->scratch, mark);
        if (r < 0 ||
            slm__json_grow(&c->alloc, (void **)&c->ints, &c->cap_ints, (int64_t)c->n_ints + 3, sizeof *c->ints))
            return slm__schema_oom(c);
        c->ints[c->n_ints++] = r;
        c->ints[c->n_ints++] = m;
        c->ints[c->n_ints++] = c->js.nodes[m].user & 1;
        if (c->ints[c->n_ints - 1])
            n_req++;
        else
            n_opt++;
    }
    /* the "-rest" rules, last first: rest(i) = ( "," space kv(i+1) )? rest(i+1) over the optional ones */
    {
        int32_t next_rest = -1, prev_kv = -1, k;
        for (k = c->n_ints - 3; k >= base; k -= 3) {
            int32_t mm = c->ints[k + 1];
            if (c->ints[k + 2]) continue;
            if (prev_kv >= 0) {
                char body[2 * SLM__SCHEMA_REF_MAX + 32];
                slm__format(body, sizeof body, "( \",\" space %s )?%s%s", slm__schema_rule_name(c, prev_kv),
                            next_rest >= 0 ? " " : "", next_rest >= 0 ? slm__schema_rule_name(c, next_rest) : "");
                slm__schema_name(sub, name, c->js.text + c->js.nodes[mm].key, (size_t)c->js.nodes[mm].key_len);
                slm__format(sub + strlen(sub), sizeof sub - strlen(sub), "-rest");
                next_rest = slm__schema_add_rule(c, sub, body, strlen(body));
                if (next_rest < 0) return -1;
            }
            c->ints[k + 1] = next_rest; /* the member is no longer needed: its rest rule instead */
            prev_kv = c->ints[k];
        }
    }
    slm__sbuf_str(c, &c->scratch, "\"{\" space");
    for (i = base, m = 0; i < c->n_ints; i += 3) {
        if (!c->ints[i + 2]) continue;
        slm__sbuf_str(c, &c->scratch, m++ ? " \",\" space " : " ");
        slm__sbuf_str(c, &c->scratch, slm__schema_rule_name(c, c->ints[i]));
    }
    if (n_opt) {
        slm__sbuf_str(c, &c->scratch, n_req ? " ( \",\" space ( " : " ( ");
        for (i = base, m = 0; i < c->n_ints; i += 3) {
            if (c->ints[i + 2]) continue;
            if (m++) slm__sbuf_str(c, &c->scratch, " | ");
            slm__sbuf_str(c, &c->scratch, slm__schema_rule_name(c, c->ints[i]));
            if (c->ints[i + 1] >= 0) {
                slm__sbuf_str(c, &c->scratch, " ");
                slm__sbuf_str(c, &c->scratch, slm__schema_rule_name(c, c->ints[i + 1]));
            }
        }
        slm__sbuf_str(c, &c->scratch, n_req ? " ) )?" : " )?");
    }
    c->n_ints = base;
    return slm__sbuf_str(c, &c->scratch, " space \"}\"");
}

static int slm__schema_array(slm__schema *c, const slm__schema_kw *kw, const char *name) {
    int min = 0, max = -1;
    char item[SLM__SCHEMA_REF_MAX], sub[SLM__SCHEMA_REF_MAX], msg[SLM__MSG_MAX];
    int32_t items = kw->items;
    if (kw->min_items >= 0 && slm__schema_count(c, kw->min_items, "minItems", &min)) return -1;
    if (kw->max_items >= 0 && slm__schema_count(c, kw->max_items, "maxItems", &max)) return -1;
    if (max >= 0 && min > max) {
        slm__format(msg, sizeof msg, "'minItems' %d is more than 'maxItems' %d (no array has both)", min, max);
        return slm__schema_fail(c, msg);
    }
    if (items >= 0 && c->js.nodes[items].type == SLM__JSON_ARRAY)
        return slm__schema_fail(c, "'items' as an array (a tuple) is not supported");
    if (items >= 0 && c->js.nodes[items].type != SLM__JSON_OBJECT && c->js.nodes[items].type != SLM__JSON_TRUE &&
        c->js.nodes[items].type != SLM__JSON_FALSE)
        return slm__schema_fail(c, "'items' must be a schema");
    if ((items < 0 || c->js.nodes[items].type == SLM__JSON_TRUE) && min == 0 && max < 0)
        return slm__schema_put_primitive(c, "array");
    slm__schema_primitive(c, "space");
    if (items < 0) {
        slm__schema_primitive(c, "value");
        slm__format(item, sizeof item, "value");
    } else {
        slm__schema_name(sub, name, "item", 4);
        if (slm__schema_sub(c, items, "items", NULL, 0, sub, item, sizeof item)) return -1;
    }
    slm__sbuf_str(c, &c->scratch, "\"[\" space ");
    slm__schema_repeat(c, item, min, max);
    return slm__sbuf_str(c, &c->scratch, " space \"]\"");
}

/* Appends to scratch the body of the rule for the schema at node; name is
   what the rules made for its parts are named after. */
static int slm__schema_visit(slm__schema *c, int32_t node, const char *name) {
    const slm__json_node *n = &c->js.nodes[node];
    slm__schema_kw kw;
    int types[7], n_types, i, obj_kw, arr_kw;
    char msg[SLM__MSG_MAX];
    if (c->result != SLM_OK) return -1;
    if (n->type == SLM__JSON_TRUE) return slm__schema_put_primitive(c, "value");
    if (n->type == SLM__JSON_FALSE) return slm__schema_fail(c, "the schema false admits no value");
    if (n->type != SLM__JSON_OBJECT) return slm__schema_fail(c, "a schema must be an object or a boolean");
    if (slm__schema_keywords(c, node, &kw)) return -1;
    if (kw.ref >= 0) {
        int32_t others[9] = { kw.type,      kw.properties, kw.required, kw.additional, kw.items,
                              kw.min_items, kw.max_items,  kw.enum_,    kw.const_ };
        for (i = 0; i < 9; i++)
            if (others[i] >= 0) {
                slm__format(msg, sizeof msg, "'%s' beside '$ref' is not supported (only annotations are)",
                            c->js.text + c->js.nodes[others[i]].key);
                return slm__schema_fail(c, msg);
            }
        return slm__schema_ref(c, kw.ref);
    }
    n_types = slm__schema_types(c, &kw, types);
    if (n_types < 0) return -1;
    obj_kw = kw.properties >= 0 ? kw.properties : kw.required >= 0 ? kw.required : kw.additional;
    arr_kw = kw.items >= 0 ? kw.items : kw.min_items >= 0 ? kw.min_items : kw.max_items;
    if (kw.enum_ >= 0 || kw.const_ >= 0) {
        int32_t v, first, idx;
        int mask = 0;
        if (kw.enum_ >= 0 && kw.const_ >= 0)
            return slm__schema_fail(c, "'const' and 'enum' together are not supported");
        if (obj_kw >= 0 || arr_kw >= 0) {
            slm__format(msg, sizeof msg, "'%s' beside '%s' is not supported",
                        c->js.text + c->js.nodes[obj_kw >= 0 ? obj_kw : arr_kw].key, kw.enum_ >= 0 ? "enum" : "const");
            return slm__schema_fail(c, msg);
        }
        for (i = 0; i < n_types; i++) mask |= types[i];
        if (kw.enum_ >= 0 && (c->js.nodes[kw.enum_].type != SLM__JSON_ARRAY || c->js.nodes[kw.enum_].n == 0))
            return slm__schema_fail(c, "'enum' must be a non-empty array (an empty one admits no value)");
        first = kw.enum_ >= 0 ? c->js.nodes[kw.enum_].first : kw.const_;
        if (kw.enum_ >= 0) slm__sbuf_str(c, &c->scratch, "(");
        for (v = first, idx = 0; v >= 0; v = kw.enum_ >= 0 ? c->js.nodes[v].next : -1, idx++) {
            int t = slm__schema_type_of(c, v);
            if (mask && !(t & mask)) {
                int32_t pmark = slm__schema_push(c, kw.enum_ >= 0 ? "enum" : "const", kw.enum_ >= 0 ? 4 : 5);
                if (kw.enum_ >= 0) {
                    char num[16];
                    slm__format(num, sizeof num, "%d", idx);
                    slm__schema_pointer(c, &c->path, num, strlen(num));
                }
                slm__schema_fail(c, "a value that contradicts 'type'");
                slm__sbuf_cut(&c->path, pmark);
                return -1;
            }
            if (idx) slm__sbuf_str(c, &c->scratch, " | ");
            if (slm__schema_const(c, v)) return -1;
        }
        return kw.enum_ >= 0 ? slm__sbuf_str(c, &c->scratch, ")") : 0;
    }
    if (n_types == 0) {
        if (obj_kw >= 0 && arr_kw >= 0)
            return slm__schema_fail(c, "keywords of objects and of arrays without a 'type' saying which");
        if (obj_kw < 0 && arr_kw < 0) return slm__schema_put_primitive(c, "value");
        types[n_types++] = obj_kw >= 0 ? SLM__JT_OBJECT : SLM__JT_ARRAY;
    } else {
        int mask = 0;
        for (i = 0; i < n_types; i++) mask |= types[i];
        if ((obj_kw >= 0 && !(mask & SLM__JT_OBJECT)) || (arr_kw >= 0 && !(mask & SLM__JT_ARRAY))) {
            int o = obj_kw >= 0 && !(mask & SLM__JT_OBJECT);
            slm__format(msg, sizeof msg, "'%s' applies to %s, which 'type' does not allow",
                        c->js.text + c->js.nodes[o ? obj_kw : arr_kw].key, o ? "objects" : "arrays");
            return slm__schema_fail(c, msg);
        }
    }
    for (i = 0; i < n_types; i++) {
        int32_t mark;
        int k;
        if (i) slm__sbuf_str(c, &c->scratch, " | ");
        mark = c->scratch.n;
        for (k = 0; (1 << k) != types[i]; k++) {}
        if (types[i] == SLM__JT_OBJECT)
            slm__schema_object(c, &kw, name);
        else if (types[i] == SLM__JT_ARRAY)
            slm__schema_array(c, &kw, name);
        else
            slm__schema_put_primitive(c, slm__jt_names[k]);
        if (n_types > 1) {
            char sub[SLM__SCHEMA_REF_MAX];
            slm__schema_name(sub, name, slm__jt_names[k], strlen(slm__jt_names[k]));
            slm__schema_to_rule(c, mark, sub);
        }
        if (c->result != SLM_OK) return -1;
    }
    return 0;
}

/* Whether some document of the schema at node is finite, given which
   $defs entries are known to have one (c->defs[].ends). Schemas were
   checked by the visit: this only reads them. */
static int slm__schema_ends(slm__schema *c, int32_t node) {
    slm__schema_kw kw;
    int types[7], n_types, i;
    int32_t m;
    if (c->js.nodes[node].type != SLM__JSON_OBJECT) return c->js.nodes[node].type == SLM__JSON_TRUE;
    if (slm__schema_keywords(c, node, &kw)) return 0;
    if (kw.ref >= 0) {
        int32_t d = slm__schema_def_of(c, slm__schema_resolve(c, kw.ref));
        return d >= 0 && c->defs[d].ends;
    }
    if (kw.enum_ >= 0 || kw.const_ >= 0) return 1;
    n_types = slm__schema_types(c, &kw, types);
    if (n_types <= 0) {
        if (kw.properties >= 0 || kw.required >= 0)
            types[0] = SLM__JT_OBJECT;
        else if (kw.items >= 0 || kw.min_items >= 0)
            types[0] = SLM__JT_ARRAY;
        else
            return 1;
        n_types = 1;
    }
    for (i = 0; i < n_types; i++) {
        if (types[i] == SLM__JT_OBJECT) {
            int ok = 1;
            for (m = kw.properties >= 0 ? c->js.nodes[kw.properties].first : -1; m >= 0 && ok; m = c->js.nodes[m].next)
                if (c->js.nodes[m].user & 1) ok = slm__schema_ends(c, m);
            if (ok) return 1;
        } else if (types[i] == SLM__JT_ARRAY) {
            int min = 0;
            if (kw.min_items >= 0) slm__schema_count(c, kw.min_items, "minItems", &min);
            if (min == 0 || kw.items < 0 || slm__schema_ends(c, kw.items)) return 1;
        } else {
            return 1;
        }
    }
    return 0;
}

/* slm_json_schema_to_gbnf with an allocator (zero: SLM_MALLOC / SLM_FREE),
   for slm_grammar_new's desc.alloc and the tests' failing allocators. */
static slm_result slm__json_schema_to_gbnf(slm_allocator alloc, const char *schema, char *out, size_t out_cap,
                                           size_t *out_len, char *error, size_t error_cap) {
    slm__schema c;
    slm_result r;
    size_t total = 0, at = 0;
    int32_t i;
    if (!error) error_cap = 0;
    if (error_cap) error[0] = 0;
    if (out_len) *out_len = 0;
    if (out && out_cap) out[0] = 0;
    if (!schema || (!out && out_cap) || !alloc.alloc != !alloc.free) {
        slm__format(error, error_cap, "slm_json_schema_to_gbnf: %s",
                    !schema                       ? "schema is NULL"
                    : !alloc.alloc != !alloc.free ? "an allocator with only one of alloc and free"
                                                  : "out is NULL with out_cap > 0");
        return SLM_ERR_INVALID_ARG;
    }
    memset(&c, 0, sizeof c);
    c.alloc = slm__allocator_or_default(alloc);
    c.error = error;
    c.error_cap = error_cap;
    c.defs_node[0] = c.defs_node[1] = -1;
    r = slm__json_parse(&c.js, schema, strlen(schema), c.alloc, error, error_cap);
    /* every buffer has memory from the start, so that p + n is a pointer even
       before the first put (a $ref to an empty name puts nothing) */
    if (r == SLM_OK && (slm__sbuf_put(&c, &c.scratch, "", 0) || slm__sbuf_put(&c, &c.store, "", 0) ||
                        slm__sbuf_put(&c, &c.path, "", 0)))
        r = c.result;
    if (r == SLM_OK && c.js.nodes[0].type == SLM__JSON_OBJECT) {
        c.defs_node[0] = slm__json_member(&c.js, 0, "$defs");
        c.defs_node[1] = slm__json_member(&c.js, 0, "definitions");
        for (i = 0; i < 2; i++)
            if (c.defs_node[i] >= 0 && c.js.nodes[c.defs_node[i]].type != SLM__JSON_OBJECT) {
                slm__format(error, error_cap, "'%s' must be an object", i ? "definitions" : "$defs");
                r = SLM_ERR_INVALID_ARG;
            }
        for (i = 0; i < 2 && r == SLM_OK; i++) {
            uint32_t cap = 8;
            int32_t m;
            if (c.defs_node[i] < 0) continue;
            while (cap < 2 * (uint32_t)c.js.nodes[c.defs_node[i]].n) cap *= 2;
            c.def_slots[i] = (int32_t *)slm__alloc(&c.alloc, (size_t)cap * sizeof(int32_t));
            if (!c.def_slots[i]) {
                slm__schema_oom(&c);
                r = c.result;
                break;
            }
            memset(c.def_slots[i], 0xFF, (size_t)cap * sizeof(int32_t));
            c.def_mask[i] = cap - 1;
            for (m = c.js.nodes[c.defs_node[i]].first; m >= 0; m = c.js.nodes[m].next)
                slm__schema_set_put(&c, c.def_slots[i], c.def_mask[i], m, 1);
        }
    }
    if (r == SLM_OK) {
        slm__schema_new_rule(&c, "root", NULL, 0);
        slm__schema_primitive(&c, "space");
        if (slm__schema_visit(&c, 0, "") == 0) {
            c.rules[0].body = c.store.n;
            c.rules[0].body_len = c.scratch.n;
            slm__sbuf_put(&c, &c.store, c.scratch.p, (size_t)c.scratch.n);
            slm__sbuf_cut(&c.scratch, 0);
        }
        /* the $defs entries the $refs reached, in the order they were reached */
        while (c.result == SLM_OK && c.next_def < c.n_defs) {
            slm__schema_def *d = &c.defs[c.next_def++];
            int32_t rule = d->rule, node = d->node;
            char name[SLM__SCHEMA_REF_MAX];
            slm__sbuf_cut(&c.path, 0);
            slm__sbuf_str(&c, &c.path, c.store.p + d->path);
            slm__format(name, sizeof name, "%s", slm__schema_rule_name(&c, rule));
            if (slm__schema_visit(&c, node, name)) break;
            c.rules[rule].body = c.store.n;
            c.rules[rule].body_len = c.scratch.n;
            slm__sbuf_put(&c, &c.store, c.scratch.p, (size_t)c.scratch.n);
            slm__sbuf_cut(&c.scratch, 0);
        }
        /* every reached entry must have a finite document: a fixpoint */
        if (c.result == SLM_OK) {
            int changed = 1;
            while (changed) {
                changed = 0;
                for (i = c.n_defs - 1; i >= 0; i--) /* last first: a chain of $refs settles in one pass */
                    if (!c.defs[i].ends && slm__schema_ends(&c, c.defs[i].node)) c.defs[i].ends = changed = 1;
            }
            for (i = 0; i < c.n_defs && c.result == SLM_OK; i++)
                if (!c.defs[i].ends) {
                    slm__sbuf_cut(&c.path, 0);
                    slm__sbuf_str(&c, &c.path, c.store.p + c.defs[i].path);
                    slm__schema_fail(&c, "a $ref cycle that can never end (each value requires another one)");
                }
        }
        r = c.result;
    }
    if (r == SLM_OK) {
        for (i = 0; i < c.n_rules; i++) total += (size_t)c.rules[i].name_len + 5 + (size_t)c.rules[i].body_len + 1;
        for (i = 0; i < c.n_rules && out_cap; i++) {
            const char *parts[4];
            size_t lens[4], k;
            parts[0] = slm__schema_rule_name(&c, i), lens[0] = (size_t)c.rules[i].name_len;
            parts[1] = " ::= ", lens[1] = 5;
            parts[2] = c.store.p + c.rules[i].body, lens[2] = (size_t)c.rules[i].body_len;
            parts[3] = "\n", lens[3] = 1;
            for (k = 0; k < 4; k++) {
                size_t n = lens[k] < out_cap - 1 - at ? lens[k] : out_cap - 1 - at;
                memcpy(out + at, parts[k], n);
                at += n;
            }
        }
        if (out_cap) out[at] = 0;
        if (out_len) *out_len = total;
    }
    slm__json_free(&c.js);
    slm__free(&c.alloc, c.store.p);
    slm__free(&c.alloc, c.scratch.p);
    slm__free(&c.alloc, c.path.p);
    slm__free(&c.alloc, c.rules);
    slm__free(&c.alloc, c.slots);
    slm__free(&c.alloc, c.defs);
    slm__free(&c.alloc, c.ints);
    slm__free(&c.alloc, c.def_slots[0]);
    slm__free(&c.alloc, c.def_slots[1]);
    return r;
}

SLM_API slm_result slm_json_schema_to_gbnf(const char *schema, char *out, size_t out_cap, size_t *out_len, char *error,
                                           size_t error_cap) {
    slm_allocator none;
    memset(&none, 0, sizeof none);
    return slm__json_schema_to_gbnf(none, schema, out, out_cap, out_len, error, error_cap);
}

/* ---- grammar matching ------------------------------------------------------
   Owns the state of a grammar while slm_generate runs: the set of parse
   stacks after the text so far, and the mask of tokens that keep the text a
   prefix of the language.
   llama.cpp's algorithm over bytes: a stack is the list of grammar positions
   still to match, its top a BYTES element (rule references are expanded into
   one stack per alternative as soon as they reach the top; a finished rule
   pops); the empty stack means the text is a whole sentence. Stacks are
   hash-consed as (position, parent stack) into ids (0 = the empty stack),
   and sets of stacks (sorted ids) into state ids (0 = the dead, empty set),
   so that the transition state x byte -> state is a table lookup once seen.
   The mask of a state walks the session's token trie (every token's piece,
   in DFS order) with those transitions, skipping the subtree of a dead
   prefix at once, and is cached per state: JSON comes back to the same
   states again and again. Caches are flushed past SLM__GM_CACHE_MAX bytes. */

#define SLM__GM_MAX_SET    4096      /* stacks in one state: more is an ambiguous grammar, an error */
#define SLM__GM_MAX_STACKS (1 << 20) /* stacks (and stack ids in states) in all: at half, a restart */
#define SLM__GM_CACHE_MAX  (48u << 20)

typedef struct slm__gm_stack {
    int32_t pos, parent; /* pos: a RULE or BYTES element of the grammar; parent: a stack id */
} slm__gm_stack;

/* The tokens of a vocabulary as a trie in DFS order: node i spells the bytes
   of its ancestors then byte[i]; its subtree is [i, end[i]). End-of-text,
   control, unknown, unused and empty-piece tokens are left out. Tokens are
   sorted by piece, so the tokens of one piece sit side by side. */
typedef struct slm__gm_trie {
    int32_t n_nodes, max_depth;
    uint8_t *byte;
    uint16_t *depth; /* 1 for a child of the root */
    int32_t *end, *tok_first, *toks;
    uint16_t *n_toks; /* node i's tokens: toks[tok_first[i] .. + n_toks[i]) */
} slm__gm_trie;

typedef struct slm__gmatch {
    const slm_grammar *g;
    const slm_allocator *a;
    int32_t *alt_first; /* the alternatives' first elements, rule by rule: alt_first[alt_off[r] .. alt_off[r + 1]) */
    int32_t *alt_off;
    slm__gm_stack *stacks;
    int32_t n_stacks, cap_stacks;
    int32_t *stack_hash; /* open addressing: stack id, -1 empty */
    uint32_t stack_mask;
    uint32_t *seen; /* [cap_stacks] stamp of the last advance that met the stack */
    uint32_t stamp;
    int32_t *items; /* the states' stacks, state after state */
    size_t n_items, cap_items;
    int32_t *state_off; /* [n_states + 1] */
    int32_t n_states, cap_states;
    int32_t *state_hash;
    uint32_t state_mask;
    int32_t **rows;   /* [cap_states] 256 transitions each (-1 not known yet), NULL until needed */
    uint32_t **masks; /* [cap_states] n_vocab bits each, NULL until needed */
    int32_t *mask_count;
    size_t cache_bytes;
    int32_t *todo, *set; /* scratch of an advance */
    int32_t n_todo, cap_todo, n_set, cap_set;
    int32_t *walk; /* [trie max_depth + 1] states along the trie path */
    int n_vocab, mask_words;
    int failed; /* SLM_ERR_OOM or SLM_ERR_INVALID_ARG (too many stacks) once it happened */
} slm__gmatch;

static int slm__gm_grow(const slm_allocator *a, void **p, size_t elem, int32_t *cap, int32_t need) {
    int32_t nc = *cap ? *cap : 64;
    void *np;
    if (need <= *cap) return 1;
    while (nc < need) nc *= 2;
    np = slm__alloc(a, (size_t)nc * elem);
    if (!np) return 0;
    if (*p) memcpy(np, *p, (size_t)*cap * elem);
    slm__free(a, *p);
    *p = np;
    *cap = nc;
    return 1;
}

static uint32_t slm__gm_hash2(uint32_t x, uint32_t y) {
    uint64_t h = ((uint64_t)x << 32 | y) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 29);
}

static void slm__gm_rehash_stacks(slm__gmatch *m) {
    int32_t i;
    for (i = 0; i <= (int32_t)m->stack_mask; i++) m->stack_hash[i] = -1;
    for (i = 1; i < m->n_stacks; i++) {
        uint32_t h = slm__gm_hash2((uint32_t)m->stacks[i].pos, (uint32_t)m->stacks[i].parent) & m->stack_mask;
        while (m->stack_hash[h] >= 0) h = (h + 1) & m->stack_mask;
        m->stack_hash[h] = i;
    }
}

/* The stack (pos, parent) with pos's element on top; a position at the end
   of an alternative is a finished rule: the parent goes on. -1 on failure. */
static int32_t slm__gm_push(slm__gmatch *m, int32_t pos, int32_t parent) {
    uint32_t h;
    int32_t t = m->g->elems[pos].type, id;
    if (t == SLM__GE_END || t == SLM__GE_ALT) return parent;
    h = slm__gm_hash2((uint32_t)pos, (uint32_t)parent) & m->stack_mask;
    for (; (id = m->stack_hash[h]) >= 0; h = (h + 1) & m->stack_mask)
        if (m->stacks[id].pos == pos && m->stacks[id].parent == parent) return id;
    if (m->n_stacks >= SLM__GM_MAX_STACKS) {
        m->failed = SLM_ERR_INVALID_ARG;
        return -1;
    }
    if (m->n_stacks + 1 > m->cap_stacks) {
        int32_t cap = m->cap_stacks;
        uint32_t *seen;
        if (!slm__gm_grow(m->a, (void **)&m->stacks, sizeof *m->stacks, &m->cap_stacks, m->n_stacks + 1)) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        seen = (uint32_t *)slm__alloc(m->a, (size_t)m->cap_stacks * sizeof *seen);
        if (!seen) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        memcpy(seen, m->seen, (size_t)cap * sizeof *seen);
        memset(seen + cap, 0, (size_t)(m->cap_stacks - cap) * sizeof *seen);
        slm__free(m->a, m->seen);
        m->seen = seen;
    }
    if ((uint32_t)(m->n_stacks + 1) * 2 > m->stack_mask + 1) {
        int32_t *nh = (int32_t *)slm__alloc(m->a, (size_t)(m->stack_mask + 1) * 2 * sizeof *nh);
        if (!nh) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        slm__free(m->a, m->stack_hash);
        m->stack_hash = nh;
        m->stack_mask = m->stack_mask * 2 + 1;
        slm__gm_rehash_stacks(m);
        h = slm__gm_hash2((uint32_t)pos, (uint32_t)parent) & m->stack_mask;
        while (m->stack_hash[h] >= 0) h = (h + 1) & m->stack_mask;
    }
    id = m->n_stacks++;
    m->stacks[id].pos = pos;
    m->stacks[id].parent = parent;
    m->seen[id] = 0;
    m->stack_hash[h] = id;
    return id;
}

static void slm__gm_todo(slm__gmatch *m, int32_t id) {
    if (id < 0 || m->seen[id] == m->stamp) return;
    m->seen[id] = m->stamp;
    if (!slm__gm_grow(m->a, (void **)&m->todo, sizeof *m->todo, &m->cap_todo, m->n_todo + 1)) {
        m->failed = SLM_ERR_OOM;
        return;
    }
    m->todo[m->n_todo++] = id;
}

/* Expands the queued stacks until each has a BYTES element on top (or is
   empty) into m->set, sorted, without repeats. The stamp makes a stack met
   twice in one advance expand once: an ambiguous grammar costs its distinct
   stacks, never their paths. */
static void slm__gm_advance(slm__gmatch *m) {
    const slm__gelem *e = m->g->elems;
    m->n_set = 0;
    while (m->n_todo > 0 && !m->failed) {
        int32_t id = m->todo[--m->n_todo], k;
        if (id == 0 || e[m->stacks[id].pos].type == SLM__GE_BYTES) {
            if (m->n_set >= SLM__GM_MAX_SET) {
                m->failed = SLM_ERR_INVALID_ARG;
                break;
            }
            if (!slm__gm_grow(m->a, (void **)&m->set, sizeof *m->set, &m->cap_set, m->n_set + 1)) {
                m->failed = SLM_ERR_OOM;
                break;
            }
            m->set[m->n_set++] = id;
        } else { /* a rule reference: one stack per alternative, over what follows the reference */
            int32_t r = e[m->stacks[id].pos].value, cont = slm__gm_push(m, m->stacks[id].pos + 1, m->stacks[id].parent);
            for (k = m->alt_off[r]; k < m->alt_off[r + 1] && cont >= 0; k++)
                slm__gm_todo(m, slm__gm_push(m, m->alt_first[k], cont));
        }
    }
    m->n_todo = 0;
    if (m->n_set > 1) { /* insertion sort: sets are small */
        int32_t i, j, x;
        for (i = 1; i < m->n_set; i++) {
            x = m->set[i];
            for (j = i; j > 0 && m->set[j - 1] > x; j--) m->set[j] = m->set[j - 1];
            m->set[j] = x;
        }
    }
}

static uint32_t slm__gm_set_hash(const int32_t *s, int32_t n) {
    uint32_t h = 2166136261u;
    int32_t i;
    for (i = 0; i < n; i++) h = (h ^ (uint32_t)s[i]) * 16777619u;
    return h;
}

static void slm__gm_rehash_states(slm__gmatch *m) {
    int32_t i;
    for (i = 0; i <= (int32_t)m->state_mask; i++) m->state_hash[i] = -1;
    for (i = 1; i < m->n_states; i++) {
        uint32_t h =
            slm__gm_set_hash(m->items + m->state_off[i], m->state_off[i + 1] - m->state_off[i]) & m->state_mask;
        while (m->state_hash[h] >= 0) h = (h + 1) & m->state_mask;
        m->state_hash[h] = i;
    }
}

/* The id of the state m->set; 0 for the empty set, -1 on failure. */
static int32_t slm__gm_intern(slm__gmatch *m) {
    uint32_t h;
    int32_t id, n = m->n_set;
    if (m->failed) return -1;
    if (n == 0) return 0;
    h = slm__gm_set_hash(m->set, n) & m->state_mask;
    for (; (id = m->state_hash[h]) >= 0; h = (h + 1) & m->state_mask)
        if (m->state_off[id + 1] - m->state_off[id] == n &&
            memcmp(m->items + m->state_off[id], m->set, (size_t)n * sizeof *m->set) == 0)
            return id;
    if (m->n_items + (size_t)n > (size_t)SLM__GM_MAX_STACKS) {
        m->failed = SLM_ERR_INVALID_ARG;
        return -1;
    }
    if (m->n_items + (size_t)n > m->cap_items) {
        size_t cap = m->cap_items * 2;
        int32_t *ni;
        while (cap < m->n_items + (size_t)n) cap *= 2;
        if (!(ni = (int32_t *)slm__alloc(m->a, cap * sizeof *ni))) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        memcpy(ni, m->items, m->n_items * sizeof *ni);
        slm__free(m->a, m->items);
        m->items = ni;
        m->cap_items = cap;
    }
    if (m->n_states + 2 > m->cap_states) {
        int32_t c1 = m->cap_states, c2 = m->cap_states, c3 = m->cap_states, c4 = m->cap_states;
        if (!slm__gm_grow(m->a, (void **)&m->state_off, sizeof *m->state_off, &c1, m->n_states + 2) ||
            !slm__gm_grow(m->a, (void **)&m->rows, sizeof *m->rows, &c2, m->n_states + 2) ||
            !slm__gm_grow(m->a, (void **)&m->masks, sizeof *m->masks, &c3, m->n_states + 2) ||
            !slm__gm_grow(m->a, (void **)&m->mask_count, sizeof *m->mask_count, &c4, m->n_states + 2)) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        /* all four grew to the same size (the same start, the same doubling) */
        m->cap_states = c1;
    }
    if ((uint32_t)(m->n_states + 1) * 2 > m->state_mask + 1) {
        int32_t *nh = (int32_t *)slm__alloc(m->a, (size_t)(m->state_mask + 1) * 2 * sizeof *nh);
        if (!nh) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        slm__free(m->a, m->state_hash);
        m->state_hash = nh;
        m->state_mask = m->state_mask * 2 + 1;
        slm__gm_rehash_states(m);
        h = slm__gm_set_hash(m->set, n) & m->state_mask;
        while (m->state_hash[h] >= 0) h = (h + 1) & m->state_mask;
    }
    id = m->n_states++;
    memcpy(m->items + m->n_items, m->set, (size_t)n * sizeof *m->set);
    m->n_items += (size_t)n;
    m->state_off[id + 1] = (int32_t)m->n_items;
    m->rows[id] = NULL;
    m->masks[id] = NULL;
    m->state_hash[h] = id;
    return id;
}

/* The state after byte b from state st, without the cache: 0 dead, -1 failed. */
static int32_t slm__gm_step_plain(slm__gmatch *m, int32_t st, int b) {
    const slm__gelem *e = m->g->elems;
    int32_t i;
    if (st <= 0) return st;
    m->stamp++;
    m->n_todo = 0;
    for (i = m->state_off[st]; i < m->state_off[st + 1]; i++) {
        int32_t id = m->items[i];
        const uint32_t *set;
        if (id == 0) continue;
        set = m->g->sets[e[m->stacks[id].pos].value];
        if (set[b >> 5] >> (b & 31) & 1) slm__gm_todo(m, slm__gm_push(m, m->stacks[id].pos + 1, m->stacks[id].parent));
    }
    slm__gm_advance(m);
    return slm__gm_intern(m);
}

/* The same through the transition cache. */
static int32_t slm__gm_step(slm__gmatch *m, int32_t st, int b) {
    int32_t *row, next;
    if (st <= 0) return st;
    row = m->rows[st];
    if (!row && m->cache_bytes > SLM__GM_CACHE_MAX) return slm__gm_step_plain(m, st, b); /* full: no more rows */
    if (!row) {
        if (!(row = (int32_t *)slm__alloc(m->a, 256 * sizeof *row))) {
            m->failed = SLM_ERR_OOM;
            return -1;
        }
        memset(row, 0xFF, 256 * sizeof *row);
        m->rows[st] = row;
        m->cache_bytes += 256 * sizeof *row;
    }
    if (row[b] >= 0) return row[b];
    next = slm__gm_step_plain(m, st, b);
    if (next >= 0) m->rows[st][b] = next; /* rows[st] is still row: rows only move, their blocks stay */
    return next;
}

/* 1 when the text of state st is a sentence; 2 when, also, no byte can follow. */
static int slm__gm_accepting(const slm__gmatch *m, int32_t st) {
    if (st <= 0 || m->items[m->state_off[st]] != 0) return 0; /* sorted: the empty stack comes first */
    return m->state_off[st + 1] - m->state_off[st] == 1 ? 2 : 1;
}

static void slm__gm_flush(slm__gmatch *m) {
    int32_t i;
    for (i = 0; i < m->n_states; i++) {
        slm__free(m->a, m->rows[i]);
        slm__free(m->a, m->masks[i]);
        m->rows[i] = NULL;
        m->masks[i] = NULL;
    }
    m->cache_bytes = 0;
}

/* Forgets every stack and state but those of state st, which it numbers
   anew: a long generation keeps its tables within bounds, whatever it met
   before. Returns st's new id, -1 on failure. */
static int32_t slm__gm_restart(slm__gmatch *m, int32_t st) {
    int32_t n = m->state_off[st + 1] - m->state_off[st], i, k, total = 0, *chains, id;
    for (i = 0; i < n; i++)
        for (id = m->items[m->state_off[st] + i]; id > 0; id = m->stacks[id].parent) total++;
    /* each stack as its length and its positions from the top down */
    if (!(chains = (int32_t *)slm__alloc(m->a, (size_t)(total + n + 1) * sizeof *chains))) {
        m->failed = SLM_ERR_OOM;
        return -1;
    }
    for (k = 0, i = 0; i < n; i++) {
        int32_t len = 0, at = k++;
        for (id = m->items[m->state_off[st] + i]; id > 0; id = m->stacks[id].parent)
            chains[k++] = m->stacks[id].pos, len++;
        chains[at] = len;
    }
    slm__gm_flush(m);
    m->n_stacks = 1;
    slm__gm_rehash_stacks(m);
    m->n_states = 1;
    m->n_items = 0;
    slm__gm_rehash_states(m);
    m->n_set = 0;
    for (k = 0, i = 0; i < n; i++) {
        int32_t len = chains[k++], j;
        for (id = 0, j = len - 1; j >= 0 && id >= 0; j--) id = slm__gm_push(m, chains[k + j], id);
        k += len;
        if (id < 0) break;
        m->set[m->n_set++] = id; /* set holds n or more: it held this state once */
    }
    slm__free(m->a, chains);
    if (m->failed) return -1;
    {
        int32_t a, b, x;
        for (a = 1; a < m->n_set; a++) {
            x = m->set[a];
            for (b = a; b > 0 && m->set[b - 1] > x; b--) m->set[b] = m->set[b - 1];
            m->set[b] = x;
        }
    }
    return slm__gm_intern(m);
}

static void slm__gm_free(slm__gmatch *m) {
    if (!m->a) return;
    if (m->rows && m->masks) slm__gm_flush(m);
    slm__free(m->a, m->alt_first);
    slm__free(m->a, m->alt_off);
    slm__free(m->a, m->stacks);
    slm__free(m->a, m->stack_hash);
    slm__free(m->a, m->seen);
    slm__free(m->a, m->items);
    slm__free(m->a, m->state_off);
    slm__free(m->a, m->state_hash);
    slm__free(m->a, m->rows);
    slm__free(m->a, m->masks);
    slm__free(m->a, m->mask_count);
    slm__free(m->a, m->todo);
    slm__free(m->a, m->set);
    slm__free(m->a, m->walk);
    memset(m, 0, sizeof *m);
}

/* A matcher at the start of the text; *start gets its state (never 0 for a
   grammar that compiled: the compiler refuses rules that never match).
   SLM_ERR_INVALID_ARG for a grammar object that is not one (no rules, a
   root out of range). */
static slm_result slm__gm_init(slm__gmatch *m, const slm_grammar *g, const slm_allocator *a, int n_vocab, int max_depth,
                               int32_t *start) {
    int32_t r, p, n_alts = 0, k;
    memset(m, 0, sizeof *m);
    m->a = a;
    m->g = g;
    if (!g || g->n_rules <= 0 || g->root < 0 || g->root >= g->n_rules || !g->elems || !g->rule_first)
        return SLM_ERR_INVALID_ARG;
    for (p = 0; p < g->n_elems; p++) n_alts += g->elems[p].type == SLM__GE_END || g->elems[p].type == SLM__GE_ALT;
    m->alt_first = (int32_t *)slm__alloc(a, (size_t)(n_alts + 1) * sizeof(int32_t));
    m->alt_off = (int32_t *)slm__alloc(a, (size_t)(g->n_rules + 1) * sizeof(int32_t));
    m->stack_mask = 1023;
    m->stack_hash = (int32_t *)slm__alloc(a, (m->stack_mask + 1) * sizeof(int32_t));
    m->state_mask = 1023;
    m->state_hash = (int32_t *)slm__alloc(a, (m->state_mask + 1) * sizeof(int32_t));
    m->cap_items = 1024;
    m->items = (int32_t *)slm__alloc(a, m->cap_items * sizeof(int32_t));
    m->walk = (int32_t *)slm__alloc(a, (size_t)(max_depth + 2) * sizeof(int32_t));
    m->n_vocab = n_vocab;
    m->mask_words = (n_vocab + 31) / 32;
    if (!m->alt_first || !m->alt_off || !m->stack_hash || !m->state_hash || !m->items || !m->walk) {
        slm__gm_free(m);
        return SLM_ERR_OOM;
    }
    for (k = 0, r = 0; r < g->n_rules; r++) {
        m->alt_off[r] = k;
        p = g->rule_first[r];
        m->alt_first[k++] = p;
        for (; p < g->n_elems && g->elems[p].type != SLM__GE_END; p++)
            if (g->elems[p].type == SLM__GE_ALT) m->alt_first[k++] = p + 1;
    }
    m->alt_off[g->n_rules] = k;
    m->n_stacks = 1; /* the empty stack */
    m->stamp = 1;
    slm__gm_rehash_stacks(m);
    if (!slm__gm_grow(a, (void **)&m->stacks, sizeof *m->stacks, &m->cap_stacks, 1024) ||
        !(m->seen = (uint32_t *)slm__alloc(a, 1024 * sizeof(uint32_t)))) {
        slm__gm_free(m);
        return SLM_ERR_OOM;
    }
    memset(m->seen, 0, 1024 * sizeof(uint32_t));
    m->stacks[0].pos = m->stacks[0].parent = -1;
    {
        int32_t c1 = 0, c2 = 0, c3 = 0, c4 = 0;
        if (!slm__gm_grow(a, (void **)&m->state_off, sizeof *m->state_off, &c1, 64) ||
            !slm__gm_grow(a, (void **)&m->rows, sizeof *m->rows, &c2, 64) ||
            !slm__gm_grow(a, (void **)&m->masks, sizeof *m->masks, &c3, 64) ||
            !slm__gm_grow(a, (void **)&m->mask_count, sizeof *m->mask_count, &c4, 64)) {
            slm__gm_free(m);
            return SLM_ERR_OOM;
        }
        m->cap_states = c1;
    }
    m->state_off[0] = m->state_off[1] = 0;
    m->rows[0] = NULL;
    m->masks[0] = NULL;
    m->n_states = 1; /* the dead state */
    slm__gm_rehash_states(m);
    m->stamp++;
    for (k = m->alt_off[g->root]; k < m->alt_off[g->root + 1]; k++)
        slm__gm_todo(m, slm__gm_push(m, m->alt_first[k], 0));
    slm__gm_advance(m);
    *start = slm__gm_intern(m);
    if (*start < 0) {
        slm_result r2 = (slm_result)m->failed;
        slm__gm_free(m);
        return r2;
    }
    return SLM_OK;
}

static void slm__gm_trie_free(const slm_allocator *a, slm__gm_trie *t) {
    if (!t) return;
    slm__free(a, t->byte);
    slm__free(a, t->depth);
    slm__free(a, t->end);
    slm__free(a, t->tok_first);
    slm__free(a, t->toks);
    slm__free(a, t->n_toks);
    slm__free(a, t);
}

/* Whether a token may be matched as text at all (the trie's tokens). */
static int slm__gm_text_token(const slm_model *mdl, slm_token t) {
    const slm__vocab *v = &mdl->vocab;
    int type = slm_token_type(mdl, t), k;
    if (type == SLM_TOKEN_CONTROL || type == SLM_TOKEN_UNKNOWN || type == SLM_TOKEN_UNUSED || t == v->unk) return 0;
    if (v->piece_off[t + 1] == v->piece_off[t]) return 0;
    for (k = 0; k < v->n_eog; k++)
        if (v->eog[k] == t) return 0;
    return 1;
}

/* Sorts tokens by piece: a merge sort (qsort's comparator has no context
   argument, and a global would race between sessions on two threads). */
static void slm__gm_sort_tokens(const slm__vocab *v, slm_token *t, slm_token *tmp, int n) {
    int w, i;
    for (w = 1; w < n; w *= 2) {
        for (i = 0; i < n; i += 2 * w) {
            int lo = i, mid = SLM__MIN(i + w, n), hi = SLM__MIN(i + 2 * w, n), x = lo, y = mid, o = lo;
            while (x < mid && y < hi) {
                slm_token a = t[x], b = t[y];
                uint32_t la = v->piece_off[a + 1] - v->piece_off[a], lb = v->piece_off[b + 1] - v->piece_off[b];
                int c = memcmp(v->piece + v->piece_off[a], v->piece + v->piece_off[b], la < lb ? la : lb);
                if (c == 0) c = la < lb ? -1 : la > lb ? 1 : a < b ? -1 : 1;
                tmp[o++] = c <= 0 ? t[x++] : t[y++];
            }
            while (x < mid) tmp[o++] = t[x++];
            while (y < hi) tmp[o++] = t[y++];
        }
        memcpy(t, tmp, (size_t)n * sizeof *t);
    }
}

static slm__gm_trie *slm__gm_trie_new(const slm_model *mdl, const slm_allocator *a) {
    const slm__vocab *v = &mdl->vocab;
    int n_vocab = mdl->info.n_vocab, n = 0, i, j;
    size_t total = 0;
    slm_token *toks = (slm_token *)slm__alloc(a, (size_t)(n_vocab + 1) * sizeof *toks);
    slm_token *tmp = (slm_token *)slm__alloc(a, (size_t)(n_vocab + 1) * sizeof *tmp);
    int32_t *path = (int32_t *)slm__alloc(a, (size_t)(v->max_piece_len + 2) * sizeof *path);
    slm__gm_trie *t = (slm__gm_trie *)slm__alloc(a, sizeof *t);
    if (t) memset(t, 0, sizeof *t);
    if (!toks || !tmp || !path || !t) goto oom;
    for (i = 0; i < n_vocab && i < v->n_tokens; i++)
        if (slm__gm_text_token(mdl, i)) {
            toks[n++] = i;
            total += v->piece_off[i + 1] - v->piece_off[i];
        }
    slm__gm_sort_tokens(v, toks, tmp, n);
    t->byte = (uint8_t *)slm__alloc(a, total + 1);
    t->depth = (uint16_t *)slm__alloc(a, (total + 1) * sizeof *t->depth);
    t->end = (int32_t *)slm__alloc(a, (total + 1) * sizeof *t->end);
    t->tok_first = (int32_t *)slm__alloc(a, (total + 1) * sizeof *t->tok_first);
    t->n_toks = (uint16_t *)slm__alloc(a, (total + 1) * sizeof *t->n_toks);
    t->toks = toks;
    toks = NULL;
    if (!t->byte || !t->depth || !t->end || !t->tok_first || !t->n_toks) goto oom;
    {
        /* node by node in DFS order: a token adds the bytes past what it shares with the one before */
        const char *prev = "";
        int prev_len = 0, depth = 0, k;
        for (i = 0; i < n; i++) {
            slm_token tk = t->toks[i];
            const char *p = v->piece + v->piece_off[tk];
            int len = (int)(v->piece_off[tk + 1] - v->piece_off[tk]), common = 0;
            while (common < len && common < prev_len && p[common] == prev[common]) common++;
            for (k = common; k < depth; k++) t->end[path[k]] = t->n_nodes; /* the subtrees left behind end here */
            if (common == len) { /* the piece of the token before (sorted: a prefix comes first, so equal) */
                t->n_toks[path[len - 1]]++;
            }
            for (k = common; k < len; k++) {
                j = t->n_nodes++;
                t->byte[j] = (uint8_t)p[k];
                t->depth[j] = (uint16_t)(k + 1);
                t->tok_first[j] = i;
                t->n_toks[j] = k + 1 == len;
                path[k] = j;
            }
            depth = len;
            if (len > t->max_depth) t->max_depth = len;
            prev = p;
            prev_len = len;
        }
        for (k = 0; k < depth; k++) t->end[path[k]] = t->n_nodes;
    }
    slm__free(a, tmp);
    slm__free(a, path);
    return t;
oom:
    slm__free(a, toks);
    slm__free(a, tmp);
    slm__free(a, path);
    slm__gm_trie_free(a, t);
    return NULL;
}

/* The state after the bytes p[0..n) from st: 0 when they leave the language, -1 on failure. */
static int32_t slm__gm_walk(slm__gmatch *m, int32_t st, const char *p, int n) {
    int i;
    for (i = 0; i < n && st > 0; i++) st = slm__gm_step(m, st, (uint8_t)p[i]);
    return st;
}

/* The tokens whose piece continues the text of state st, as n_vocab bits
   (end tokens are never in it: the caller adds them), cached per state;
   *count gets how many. NULL on failure (m->failed says why). */
static const uint32_t *slm__gm_mask(slm__gmatch *m, const slm__gm_trie *t, int32_t st, int32_t *count) {
    uint32_t *mask;
    int32_t i, c = 0, k;
    if (m->masks[st]) {
        *count = m->mask_count[st];
        return m->masks[st];
    }
    if (!(mask = (uint32_t *)slm__alloc(m->a, (size_t)m->mask_words * sizeof *mask))) {
        m->failed = SLM_ERR_OOM;
        return NULL;
    }
    memset(mask, 0, (size_t)m->mask_words * sizeof *mask);
    m->walk[0] = st;
    for (i = 0; i < t->n_nodes;) {
        int32_t next = slm__gm_step(m, m->walk[t->depth[i] - 1], t->byte[i]);
        if (next <= 0) {
            if (next < 0) {
                slm__free(m->a, mask);
                return NULL;
            }
            i = t->end[i]; /* no token through this prefix */
            continue;
        }
        m->walk[t->depth[i]] = next;
        for (k = 0; k < t->n_toks[i]; k++) {
            slm_token tok = t->toks[t->tok_first[i] + k];
            mask[tok >> 5] |= 1u << (tok & 31);
        }
        c += t->n_toks[i];
        i++;
    }
    m->masks[st] = mask;
    m->mask_count[st] = c;
    m->cache_bytes += (size_t)m->mask_words * sizeof *mask;
    *count = c;
    return mask;
}

/* Why m failed, for "%s: grammar: %s". */
static const char *slm__gm_failure(const slm__gmatch *m) {
    return m->failed == SLM_ERR_OOM ? "out of memory"
                                    : "more than 4096 parse stacks at once, or 1048576 for one token (the "
                                      "grammar is too ambiguous)";
}

/* The built-in JSON grammar: any JSON value; whitespace after each token
   as llama.cpp's grammars/json.gbnf bounds it (a newline and at most 20
   spaces or tabs), numbers of at most 16 digits per part, so that a
   value always ends. */
SLM_API const char *slm_grammar_json(void) {
    return "root   ::= value\n"
           "value  ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
           "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
           "array  ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
           "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4}) )* "
           "\"\\\"\" ws\n"
           "number ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15}) (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws\n"
           "ws     ::= | \" \" | \"\\n\" [ \\t]{0,20}\n";
}

/* ---- sampler ---------------------------------------------------------------
   Owns the choice of the next token from the logits: repetition penalty,
   then greedy argmax (temperature below SLM__GREEDY_TEMP) or temperature,
   top-k, softmax, min-p, top-p and a draw from the session's seeded
   generator. Ties always go to the lower id, so equal seeds give equal text.
   Total for any logits and any options slm__opts_valid accepts: a NaN or
   infinite logit is never drawn (NaN counts as -inf; +inf only comes from an
   overflow, no more trustworthy than NaN), every intermediate value stays a
   number, and when no logit is finite there is no token but an error. */

/* Below this temperature a draw is argmax in all but name (a logit gap of
   1e-4 weighs e^-100) while x/T heads for overflow: greedy it is. */
#define SLM__GREEDY_TEMP 1e-6f

/* Bit test, not isfinite(): it must hold under -ffast-math too. */
static int slm__finite(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7F800000u) != 0x7F800000u;
}

/* An overflow of a finite logit (a penalty or a temperature division) stays
   a candidate at the end of the float range instead of becoming +-inf. */
static float slm__clamp_finite(float x) { return x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : x; }

/* A total order as long as no logit is NaN, which slm__sample guarantees:
   quickselect and qsort scan out of bounds under an inconsistent one. */
static int slm__cand_cmp(const void *pa, const void *pb) {
    const slm__cand *a = (const slm__cand *)pa, *b = (const slm__cand *)pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Moves the k best candidates to the front (unordered): quickselect. */
static void slm__select_top(slm__cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        slm__cand pivot = c[lo + (hi - lo) / 2], t;
        int i = lo, j = hi;
        while (i <= j) {
            while (slm__cand_cmp(&c[i], &pivot) < 0) i++;
            while (slm__cand_cmp(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
}

/* Every float option is a finite number (NaN fails every comparison):
   temperature any (<= 0 and tiny are greedy, huge is nearly uniform),
   top_p >= 0 (>= 1 off), min_p in [0, 1], repeat_penalty >= 0 (0 and 1 off). */
static int slm__opts_valid(const slm_gen_opts *o) {
    return o->max_tokens >= 0 && o->n_stop >= 0 && (o->n_stop == 0 || o->stop) && o->top_k >= 0 &&
           o->repeat_last_n >= 0 && o->temperature >= -FLT_MAX && o->temperature <= FLT_MAX && o->top_p >= 0.0f &&
           o->top_p <= FLT_MAX && o->min_p >= 0.0f && o->min_p <= 1.0f && o->repeat_penalty >= 0.0f &&
           o->repeat_penalty <= FLT_MAX;
}

/* The sampler proper, options already checked: SLM_OK and *out, or
   SLM_ERR_FORMAT when no logit is finite (the model computed NaN or inf:
   broken weights), with nothing written to the session's error. mask (NULL:
   none) holds n_vocab bits, a grammar's allowed tokens: the others are no
   candidates, before any filter looks at the logits. */
static slm_result slm__sample(slm_session *s, const slm_gen_opts *o, const uint32_t *mask, slm_token *out) {
    slm__cand *c = s->cand;
    int n = s->model->info.n_vocab, n_all = n, i, k;
    float penalty = o->repeat_penalty, temp = o->temperature;
    for (i = 0; i < n; i++) {
        c[i].logit = s->logits[i];
        c[i].id = i;
    }
    if (penalty > 0.0f && penalty != 1.0f) {
        int last_n = o->repeat_last_n > 0 ? o->repeat_last_n : 64, t;
        /* penalise each recent token once: mark with the sign-preserving transform, then skip repeats */
        for (t = SLM__MAX(0, s->n_past - last_n); t < s->n_past; t++) {
            slm_token id = s->tokens[t];
            int seen = 0, u;
            for (u = SLM__MAX(0, s->n_past - last_n); u < t; u++)
                if (s->tokens[u] == id) {
                    seen = 1;
                    break;
                }
            if (seen || !slm__finite(c[id].logit)) continue;
            c[id].logit = slm__clamp_finite(c[id].logit > 0.0f ? c[id].logit / penalty : c[id].logit * penalty);
        }
    }
    /* only finite logits are candidates; ids stay in increasing order */
    if (mask) {
        for (i = 0, k = 0; i < n_all; i++)
            if ((mask[i >> 5] >> (i & 31) & 1) && slm__finite(c[i].logit)) c[k++] = c[i];
    } else {
        for (i = 0, k = 0; i < n_all; i++)
            if (slm__finite(c[i].logit)) c[k++] = c[i];
    }
    n = k;
    if (n == 0) return SLM_ERR_FORMAT;
    if (!(temp >= SLM__GREEDY_TEMP)) {
        int best = 0;
        for (i = 1; i < n; i++)
            if (c[i].logit > c[best].logit) best = i;
        *out = c[best].id;
        return SLM_OK;
    }
    for (i = 0; i < n; i++) c[i].logit = slm__clamp_finite(c[i].logit / temp);
    if (o->top_k > 0 && o->top_k < n) {
        slm__select_top(c, n, o->top_k);
        n = o->top_k;
    }
    { /* softmax over the candidates; logit now holds a probability */
        float max = c[0].logit, sum = 0.0f, pmax = 0.0f, r, acc;
        int last = 0;
        for (i = 1; i < n; i++)
            if (c[i].logit > max) max = c[i].logit;
        /* x - max is in [-inf, 0] (it may overflow to -inf): each term in [0, 1],
           the best exactly 1, so 1 <= sum <= n */
        for (i = 0; i < n; i++) {
            c[i].logit = expf(c[i].logit - max);
            sum += c[i].logit;
        }
        for (i = 0; i < n; i++) {
            c[i].logit /= sum;
            if (c[i].logit > pmax) pmax = c[i].logit;
        }
        if (o->min_p > 0.0f) {
            float keep = o->min_p * pmax; /* <= pmax: the best stays */
            for (i = 0, k = 0; i < n; i++)
                if (c[i].logit >= keep) c[k++] = c[i];
            n = k;
        }
        if (o->top_p > 0.0f && o->top_p < 1.0f) {
            /* candidates below (1-p)/(n-1) can never be inside the nucleus: drop them before sorting */
            float cutoff = (1.0f - o->top_p) / (float)(n > 1 ? n - 1 : 1), cum = 0.0f;
            for (i = 0, k = 0; i < n; i++)
                if (c[i].logit >= cutoff) c[k++] = c[i];
            if (k == 0) k = n; /* cannot happen: the best candidate is >= 1/n */
            qsort(c, (size_t)k, sizeof *c, slm__cand_cmp);
            for (i = 0; i < k; i++) {
                cum += c[i].logit;
                if (cum >= o->top_p) {
                    i++;
                    break;
                }
            }
            n = i;
        }
        sum = 0.0f;
        for (i = 0; i < n; i++) sum += c[i].logit;
        r = (float)(slm__splitmix64(&s->rng) >> 40) / 16777216.0f * sum;
        acc = 0.0f;
        for (i = 0; i < n; i++) {
            acc += c[i].logit;
            if (c[i].logit > 0.0f) last = i;
            if (r < acc) break;
        }
        /* r < sum = the final acc, so the loop breaks; else the last candidate that had a chance */
        *out = c[i < n ? i : last].id;
        return SLM_OK;
    }
}

SLM_API slm_token slm_sample(slm_session *s, const slm_gen_opts *opts) {
    slm_gen_opts o;
    slm_token tok = -1;
    if (!s) return -1;
    if (!s->logits_valid) {
        slm__fail(s, SLM_ERR_INVALID_ARG, "slm_sample: no logits: evaluate tokens first");
        return -1;
    }
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (!slm__opts_valid(&o)) {
        slm__fail(s, SLM_ERR_INVALID_ARG,
                  "slm_sample: invalid options (top_k %d, top_p %g, min_p %g, temperature %g, repeat_penalty %g)",
                  o.top_k, (double)o.top_p, (double)o.min_p, (double)o.temperature, (double)o.repeat_penalty);
        return -1;
    }
    if (o.grammar) {
        slm__fail(s, SLM_ERR_INVALID_ARG,
                  "slm_sample: grammars apply in slm_generate (and slm_chat, slm_fim), which keep the parse state; "
                  "set opts->grammar to NULL here");
        return -1;
    }
    if (slm__sample(s, &o, NULL, &tok) != SLM_OK) {
        slm__fail(s, SLM_ERR_FORMAT,
                  "slm_sample: non-finite logits: no finite logit among the %d (NaN or inf weights?)",
                  s->model->info.n_vocab);
        return -1;
    }
    return tok;
}

/* ---- generation ------------------------------------------------------------
   Owns slm_generate: reuse of the cached prefix, the token loop, and the text
   stream. Text is released to the caller only when it is whole UTF-8 and can
   no longer turn into a stop string; the held-back tail is flushed at the
   end, so nothing the model wrote is lost. */

typedef struct slm__stream {
    const slm_gen_opts *o;
    char *out;
    size_t out_cap, out_len;
    char *hold;
    size_t hold_len, hold_cap;
    size_t max_stop;
    int cancelled;
} slm__stream;

static void slm__emit(slm__stream *st, const char *p, size_t n) {
    size_t i;
    if (n == 0) return;
    for (i = 0; i < n; i++) {
        if (st->out_len + 1 < st->out_cap) st->out[st->out_len] = p[i];
        st->out_len++;
    }
    if (st->o->on_token && !st->cancelled && st->o->on_token(st->o->user, p, (int)n)) st->cancelled = 1;
}

/* Bytes at the end of s[0..n) that start a UTF-8 character still missing bytes. */
static size_t slm__utf8_incomplete_tail(const char *s, size_t n) {
    size_t k;
    for (k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = (uint8_t)s[n - k];
        if ((c & 0xC0) == 0x80) continue;
        {
            size_t need = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
            return need > k ? k : 0;
        }
    }
    return 0;
}

/* Appends a piece; returns 1 when a stop string ended the text. */
static int slm__stream_push(slm__stream *st, const char *p, size_t n) {
    const slm_gen_opts *o = st->o;
    size_t safe, i, best = (size_t)-1;
    int k;
    memcpy(st->hold + st->hold_len, p, n);
    st->hold_len += n;
    for (k = 0; k < o->n_stop; k++) {
        size_t sl = o->stop[k] ? strlen(o->stop[k]) : 0;
        if (!sl || sl > st->hold_len) continue;
        for (i = 0; i + sl <= st->hold_len && i < best; i++)
            if (memcmp(st->hold + i, o->stop[k], sl) == 0) {
                best = i;
                break;
            }
    }
    if (best != (size_t)-1) {
        slm__emit(st, st->hold, best);
        st->hold_len = 0;
        return 1;
    }
    safe = st->hold_len - slm__utf8_incomplete_tail(st->hold, st->hold_len);
    for (k = 0; k < o->n_stop; k++) {
        /* keep back the longest tail that could still grow into this stop string */
        size_t sl = o->stop[k] ? strlen(o->stop[k]) : 0, t;
        for (t = SLM__MIN(sl - (sl > 0), st->hold_len); t > 0; t--)
            if (memcmp(st->hold + st->hold_len - t, o->stop[k], t) == 0) {
                if (st->hold_len - t < safe) safe = st->hold_len - t;
                break;
            }
    }
    slm__emit(st, st->hold, safe);
    memmove(st->hold, st->hold + safe, st->hold_len - safe);
    st->hold_len -= safe;
    return 0;
}

/* A grammar while the loop runs: the matcher, the state of the text so far,
   the mask handed to the sampler. */
typedef struct slm__gen_grammar {
    slm__gmatch m;
    int32_t state;
    uint32_t *mask;
} slm__gen_grammar;

static int slm__is_end_token(const slm__vocab *v, slm_token t, const slm_token *extra_stop, int n_extra_stop) {
    int k;
    for (k = 0; k < v->n_eog; k++)
        if (v->eog[k] == t) return 1;
    for (k = 0; k < n_extra_stop; k++)
        if (extra_stop[k] == t) return 1;
    return 0;
}

/* The state after token t's piece as the loop delivers it (strip_space:
   without its leading space): 0 when t may not follow, -1 on failure. An
   end token continues (returns the state) only a whole sentence. */
static int32_t slm__gen_grammar_token(slm_session *s, slm__gen_grammar *gg, slm_token t, int strip_space,
                                      const slm_token *extra_stop, int n_extra_stop) {
    const slm__vocab *v = &s->model->vocab;
    const char *p;
    int len;
    if (t < 0 || t >= v->n_tokens) return 0; /* rows of the output matrix past the vocabulary */
    p = v->piece + v->piece_off[t];
    len = (int)(v->piece_off[t + 1] - v->piece_off[t]);
    if (slm__is_end_token(v, t, extra_stop, n_extra_stop)) return slm__gm_accepting(&gg->m, gg->state) ? gg->state : 0;
    if (!slm__gm_text_token(s->model, t)) return 0;
    if (strip_space && len > 0 && p[0] == ' ') p++, len--;
    return len > 0 ? slm__gm_walk(&gg->m, gg->state, p, len) : 0;
}

/* The next token under a grammar; errors as slm__sample's, plus
   SLM_ERR_INVALID_ARG when no token may follow and SLM_ERR_OOM, with the
   message written. */
static slm_result slm__gen_grammar_sample(slm_session *s, slm__gen_grammar *gg, const slm_gen_opts *o, int strip_space,
                                          const slm_token *extra_stop, int n_extra_stop, slm_token *out,
                                          const char *fn) {
    const slm__vocab *v = &s->model->vocab;
    int n_vocab = s->model->info.n_vocab, k, accepting = slm__gm_accepting(&gg->m, gg->state);
    int32_t count = 0, next;
    slm_token t;
    if (gg->m.n_stacks > SLM__GM_MAX_STACKS / 2 || gg->m.n_items > (size_t)SLM__GM_MAX_STACKS / 2) {
        if ((gg->state = slm__gm_restart(&gg->m, gg->state)) < 0) goto failed;
        accepting = slm__gm_accepting(&gg->m, gg->state);
    } else if (gg->m.cache_bytes > SLM__GM_CACHE_MAX) {
        slm__gm_flush(&gg->m);
    }
    if (!(o->temperature >= SLM__GREEDY_TEMP)) {
        /* greedy: the best token is the best allowed one when it is allowed, and then no mask is needed */
        if (slm__sample(s, o, NULL, out) != SLM_OK) return SLM_ERR_FORMAT;
        if ((next = slm__gen_grammar_token(s, gg, *out, strip_space, extra_stop, n_extra_stop)) > 0) return SLM_OK;
        if (next < 0) goto failed;
    }
    if (strip_space) { /* the first token only: its piece is matched without its space, token by token */
        memset(gg->mask, 0, (size_t)gg->m.mask_words * sizeof *gg->mask);
        for (t = 0; t < n_vocab && t < v->n_tokens; t++) {
            if ((next = slm__gen_grammar_token(s, gg, t, 1, NULL, 0)) < 0) goto failed;
            if (next > 0) {
                gg->mask[t >> 5] |= 1u << (t & 31);
                count++;
            }
        }
    } else {
        const uint32_t *mask = slm__gm_mask(&gg->m, s->gtrie, gg->state, &count);
        if (!mask) goto failed;
        memcpy(gg->mask, mask, (size_t)gg->m.mask_words * sizeof *gg->mask);
    }
    for (k = 0; k < v->n_eog + n_extra_stop; k++) {
        t = k < v->n_eog ? v->eog[k] : extra_stop[k - v->n_eog];
        if (t < 0 || t >= n_vocab) continue;
        if (accepting) {
            count += !(gg->mask[t >> 5] >> (t & 31) & 1);
            gg->mask[t >> 5] |= 1u << (t & 31);
        }
    }
    if (count == 0)
        return slm__fail(s, SLM_ERR_INVALID_ARG,
                         "%s: grammar: no token of the vocabulary continues the text after %d tokens", fn,
                         s->stats.n_generated);
    return slm__sample(s, o, gg->mask, out);
failed:
    return slm__fail(s, (slm_result)gg->m.failed, "%s: grammar: %s", fn, slm__gm_failure(&gg->m));
}

/* The generation loop behind slm_generate, slm_chat and slm_fim: evaluates
   the n prompt tokens past what the cache already holds of them, then
   samples. extra_stop: tokens that end the text as end-of-text does.
   s->gen_last gets the last token sampled, which is never evaluated. */
static slm_result slm__generate_tokens(slm_session *s, const slm_token *toks, int n, int strip_space,
                                       const slm_gen_opts *opts, const slm_token *extra_stop, int n_extra_stop,
                                       char *out, size_t out_cap, size_t *out_len, const char *fn) {
    const slm_model *m = s->model;
    const slm__vocab *v = &m->vocab;
    slm_gen_opts o = *opts;
    slm__stream st;
    slm__gen_grammar gg;
    slm_token tok;
    int common, k;
    slm_result r = SLM_OK;
    s->gen_last = -1;
    s->stats.n_prompt = n;
    if (n > s->n_ctx)
        return slm__fail(s, SLM_ERR_CONTEXT_FULL, "%s: the prompt is %d tokens, the context %d", fn, n, s->n_ctx);
    if (n == 0 && !s->logits_valid)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "%s: empty prompt and nothing evaluated to continue from", fn);
    s->n_nodes = 0; /* the cache changes from here on */
    /* reuse what the cache already holds; the last prompt token is re-run unless its logits are current */
    for (common = 0; common < n && common < s->n_past && s->tokens[common] == toks[common]; common++) {}
    s->stats.n_cached = common;
    if (n > 0 && !(common == n && s->n_past == n && s->logits_valid)) {
        if (common == n) {
            common--;
            s->stats.n_cached = common;
        }
        slm_rewind(s, common);
        r = slm_eval(s, toks + common, n - common);
    }
    if (r != SLM_OK) return r;

    memset(&gg, 0, sizeof gg);
    if (o.grammar) {
        if (!s->gtrie && !(s->gtrie = slm__gm_trie_new(m, &s->alloc)))
            return slm__fail(s, SLM_ERR_OOM, "%s: out of memory", fn);
        r = slm__gm_init(&gg.m, o.grammar, &s->alloc, m->info.n_vocab, s->gtrie->max_depth, &gg.state);
        if (r == SLM_OK && !(gg.mask = (uint32_t *)slm__alloc(&s->alloc, (size_t)gg.m.mask_words * sizeof(uint32_t))))
            r = SLM_ERR_OOM;
        if (r != SLM_OK) {
            slm__gm_free(&gg.m);
            return slm__fail(s, r, r == SLM_ERR_OOM ? "%s: out of memory" : "%s: opts->grammar is not a grammar", fn);
        }
    }
    memset(&st, 0, sizeof st);
    st.o = &o;
    st.out = out;
    st.out_cap = out_cap;
    for (k = 0; k < o.n_stop; k++)
        if (o.stop[k] && strlen(o.stop[k]) > st.max_stop) st.max_stop = strlen(o.stop[k]);
    /* what stays held (a stop string's start, or <= 3 bytes of a character) plus one piece */
    st.hold_cap = st.max_stop + (size_t)v->max_piece_len + 8;
    st.hold = (char *)slm__alloc(&s->alloc, st.hold_cap);
    if (!st.hold) {
        slm__gm_free(&gg.m);
        slm__free(&s->alloc, gg.mask);
        return slm__fail(s, SLM_ERR_OOM, "%s: out of memory", fn);
    }
    slm_session_seed(s, o.seed);

    s->stats.stop_reason = SLM_STOP_NONE;
    while (s->stats.stop_reason == SLM_STOP_NONE) {
        const char *piece;
        int piece_len;
        r = o.grammar ? slm__gen_grammar_sample(s, &gg, &o, strip_space, extra_stop, n_extra_stop, &tok, fn)
                      : slm__sample(s, &o, NULL, &tok);
        if (r != SLM_OK && r != SLM_ERR_FORMAT) {
            s->stats.stop_reason = SLM_STOP_ERROR;
            break;
        }
        if (r != SLM_OK) {
            r = slm__fail(s, SLM_ERR_FORMAT,
                          "%s: non-finite logits after %d generated tokens: the model computed no finite "
                          "logit (NaN or inf weights?)",
                          fn, s->stats.n_generated);
            s->stats.stop_reason = SLM_STOP_ERROR;
            break;
        }
        s->gen_last = tok;
        if (slm__is_end_token(v, tok, extra_stop, n_extra_stop)) {
            s->stats.stop_reason = SLM_STOP_END_OF_TEXT;
            break;
        }
        s->stats.n_generated++;
        if (o.grammar) {
            int32_t next = slm__gen_grammar_token(s, &gg, tok, strip_space, extra_stop, n_extra_stop);
            if (next <= 0) { /* the sampler drew from the mask, so only a failure gets here */
                r = slm__fail(s, next < 0 ? (slm_result)gg.m.failed : SLM_ERR_INVALID_ARG, "%s: grammar: %s", fn,
                              next < 0 ? slm__gm_failure(&gg.m) : "a token outside the mask");
                s->stats.stop_reason = SLM_STOP_ERROR;
                break;
            }
            gg.state = next;
        }
        if (slm_token_type(m, tok) != SLM_TOKEN_CONTROL && (piece = slm_token_piece(m, tok, &piece_len)) != NULL) {
            if (strip_space && piece_len > 0 && piece[0] == ' ') {
                piece++;
                piece_len--;
            }
            strip_space = 0;
            if (slm__stream_push(&st, piece, (size_t)piece_len))
                s->stats.stop_reason = SLM_STOP_STRING;
            else if (st.cancelled) {
                r = SLM_ERR_CANCELLED;
                s->stats.stop_reason = SLM_STOP_CANCELLED;
            }
        }
        if (s->stats.stop_reason != SLM_STOP_NONE) break;
        if (o.grammar && slm__gm_accepting(&gg.m, gg.state) == 2) { /* a whole sentence that nothing can extend */
            s->stats.stop_reason = SLM_STOP_END_OF_TEXT;
            break;
        }
        if (o.max_tokens > 0 && s->stats.n_generated >= o.max_tokens) {
            s->stats.stop_reason = SLM_STOP_MAX_TOKENS;
            break;
        }
        if (s->n_past >= s->n_ctx) {
            r = slm__fail(s, SLM_ERR_CONTEXT_FULL, "%s: the %d-token context filled after %d generated tokens", fn,
                          s->n_ctx, s->stats.n_generated);
            s->stats.stop_reason = SLM_STOP_CONTEXT_FULL;
            break;
        }
        slm__forward_plain(s, &tok, 1, 1);
        s->logits_valid = 1;
    }
    if (r != SLM_ERR_CANCELLED) slm__emit(&st, st.hold, st.hold_len);
    if (st.cancelled && r == SLM_OK) {
        r = SLM_ERR_CANCELLED;
        s->stats.stop_reason = SLM_STOP_CANCELLED;
    }
    if (r == SLM_ERR_CANCELLED)
        slm__format(s->error, sizeof s->error, "%s: cancelled by on_token after %d tokens", fn, s->stats.n_generated);
    slm__free(&s->alloc, st.hold);
    slm__gm_free(&gg.m);
    slm__free(&s->alloc, gg.mask);
    if (out && out_cap) out[st.out_len < out_cap ? st.out_len : out_cap - 1] = 0;
    if (out_len) *out_len = st.out_len;
    return r;
}

/* Checks the options and clears the stats, as every generating call does first. */
static slm_result slm__gen_begin(slm_session *s, const slm_gen_opts *opts, slm_gen_opts *o, char *out, size_t out_cap,
                                 size_t *out_len, const char *fn) {
    if (out_len) *out_len = 0;
    if (out && out_cap) out[0] = 0;
    memset(&s->stats, 0, sizeof s->stats);
    s->stats.stop_reason = SLM_STOP_ERROR;
    if (!out && out_cap) return slm__fail(s, SLM_ERR_INVALID_ARG, "%s: out is NULL but out_cap is %zu", fn, out_cap);
    memset(o, 0, sizeof *o);
    if (opts) *o = *opts;
    if (!slm__opts_valid(o))
        return slm__fail(s, SLM_ERR_INVALID_ARG,
                         "%s: invalid options (max_tokens %d, n_stop %d, top_k %d, top_p %g, min_p %g)", fn,
                         o->max_tokens, o->n_stop, o->top_k, (double)o->top_p, (double)o->min_p);
    return SLM_OK;
}

/* Tokenizes text (flags of slm_tokenize) into a new array of the session's
   allocator, after the token lead unless it is negative; *n gets the count,
   lead included (0 with *out NULL when there is none). */
static slm_result slm__tokenize_alloc(slm_session *s, const char *text, size_t len, int flags, slm_token lead,
                                      slm_token **out, int *n, const char *fn) {
    slm__tok_status ts;
    int k = slm__tokenize(s->model, text, len, flags, NULL, 0, &ts), first = lead >= 0;
    *out = NULL;
    *n = 0;
    if (ts.rc != SLM_OK) return slm__fail(s, ts.rc, "%s: %s", fn, ts.msg);
    if (k < 0) k = -k;
    if (k + first == 0) return SLM_OK;
    *out = (slm_token *)slm__alloc(&s->alloc, (size_t)(k + first) * sizeof(slm_token));
    if (!*out) return slm__fail(s, SLM_ERR_OOM, "%s: out of memory", fn);
    if (first) (*out)[0] = lead;
    if (slm__tokenize(s->model, text, len, flags, *out + first, k, &ts) != k) {
        slm__free(&s->alloc, *out);
        *out = NULL;
        return slm__fail(s, ts.rc != SLM_OK ? ts.rc : SLM_ERR_OOM, "%s: %s", fn, ts.msg);
    }
    *n = k + first;
    return SLM_OK;
}

SLM_API slm_result slm_generate(slm_session *s, const char *prompt, const slm_gen_opts *opts, char *out, size_t out_cap,
                                size_t *out_len) {
    slm_gen_opts o;
    slm_token *toks = NULL;
    int n, strip_space;
    slm_result r;
    if (!s) {
        if (out_len) *out_len = 0;
        if (out && out_cap) out[0] = 0;
        return SLM_ERR_INVALID_ARG;
    }
    if ((r = slm__gen_begin(s, opts, &o, out, out_cap, out_len, "slm_generate")) != SLM_OK) return r;
    if (!prompt) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_generate: prompt is NULL");
    r = slm__tokenize_alloc(s, prompt, strlen(prompt), SLM_TOK_BOS | SLM_TOK_SPECIAL, -1, &toks, &n, "slm_generate");
    if (r != SLM_OK) return r;
    /* SentencePiece's dummy space belongs to the prompt's first word; with no
       prompt text it would lead the output, so drop it as llama2.c does */
    strip_space = prompt[0] == 0 && n == 1 && toks[0] == s->model->vocab.bos &&
                  (s->model->vocab.flags & SLM__TOKFLAG_SPACE_PREFIX);
    r = slm__generate_tokens(s, toks, n, strip_space, &o, NULL, 0, out, out_cap, out_len, "slm_generate");
    slm__free(&s->alloc, toks);
    return r;
}

/* ---- predictive text -------------------------------------------------------
   Owns slm_suggest: the window of text the model sees, token healing (the
   back-off point), the search over token paths that spell out the current
   word, and what a session keeps from one keystroke to the next.
   The search is a tree rooted at the end of the context. A node is one token
   of a path; its text (what the path spells after the context, in piece
   space) says whether it still types the tail (TYPING), spells the word past
   it (OPEN) or has ended the word with a non-word character (DONE, a leaf
   that credits its mass to a candidate). Nodes are expanded, most probable
   first, in branch batches: one forward pass per step for up to
   SLM__SUG_BATCH of them, each attending to the context and its ancestors.
   The tree only depends on the context and the tail it was grown for; a
   keystroke that extends the tail keeps it (every node consistent with the
   longer tail was made for the shorter one) and evaluates only the nodes
   that the narrower tail brings above the bar. */

#ifndef SLM__SUG_BATCH
#define SLM__SUG_BATCH 8 /* nodes per pass: about 1.8 single-token passes on one core (AVX-512 VNNI, 135M q8_0) */
#endif
#define SLM__SUG_MAX_NODES 32768 /* tree size at which the search stops growing it */
#define SLM__SUG_MAX_WORDS 8     /* slm_suggest_opts.n_words */
#define SLM__SUG_ROWS      16    /* evaluated nodes whose logits are kept */
#define SLM__SUG_CHILDREN  512   /* children of a node: a real model's likeliest 512 tokens hold nearly all its mass */
#define SLM__SUG_HEAL_MAX  8     /* tokens token healing may back off beyond the current word */
#define SLM__SUG_CHILD_MIN (-20.7f) /* ln(1e-9): a token this unlikely after a node is not followed */
/* A reported probability may miss at most about this share of itself to
   paths left unexplored (each unexplored node below it; few are compatible
   with one word), and a node that could beat the n-th candidate on its own
   is always explored. */
#define SLM__SUG_REL_EPS      2e-5
#define SLM__SUG_MAX_PASSES   64 /* a call without a time budget still ends */
#define SLM__SUG_END_EVIDENCE 32 /* evaluated nodes before the likeliest word end seen is trusted as a bound */
#ifndef SLM__SUG_MIN_PROB
#define SLM__SUG_MIN_PROB 1e-2 /* min_prob 0: a keyboard seldom shows a word this unlikely */
#endif

enum { SLM__SUG_DEAD, SLM__SUG_TYPING, SLM__SUG_OPEN, SLM__SUG_DONE };

typedef struct slm__sug_node {
    int parent; /* node index, -1 for a child of the root */
    slm_token token;
    int branch;     /* the session's branch node once evaluated, else -1 */
    int expanded;   /* its children exist */
    int row;        /* its logits in the kept rows (slm__suggest.rows), else -1 */
    int cover_tail; /* the tail length cover was counted for */
    double cover;   /* mass of its children without a node that first reach past the tail */
    int state;      /* SLM__SUG_* under the current tail */
    int cand_len;   /* DONE: bytes of the candidate from the word start */
    double logp;    /* log probability of the path, from the root */
    uint32_t text_off, text_len;
} slm__sug_node;

typedef struct slm__suggest {
    /* the window of text tokens (sticky: kept while the text still fits) */
    slm_token *text_tokens; /* the last call's tokenization of the text from byte cut on */
    int n_text_tokens, text_tokens_cap, window;
    size_t cut;   /* where the tokenized text starts: 0, or a place slm__sug_cut_at accepts */
    int cuttable; /* slm__sug_cuttable of the model, once known: 1 yes, -1 no, 0 not yet asked */
    /* the context: what the session's prefix holds for the tree */
    slm_token *ctx;
    int n_ctx_tokens, ctx_cap;
    slm_token *next_ctx; /* n_ctx + 1: a call's context while ctx holds the last one's */
    float *root_logits;  /* n_vocab */
    float *probs;        /* n_vocab: scratch of slm__sug_expand */
    int root_valid, root_cover_tail;
    /* the largest P(the word ends in the next token | node) this session's
       searches have seen, and over how many evaluated nodes */
    double end_max;
    int end_seen;
    double root_cover;
    /* the tree and the tail it was grown for */
    slm__sug_node *nodes;
    int n_nodes, nodes_cap, n_words, tree_valid, n_branches;
    char *text; /* node texts */
    size_t text_len, text_cap;
    char *tail;
    int tail_len, tail_cap, word_start;
    /* scratch */
    float *logits; /* SLM__SUG_BATCH x n_vocab */
    /* the logits of the likeliest evaluated nodes: when the next keystroke
       ends a word, the word's node becomes the context without a pass */
    float *rows; /* SLM__SUG_ROWS x n_vocab */
    int row_node[SLM__SUG_ROWS];
    int *order;
    int order_cap;
    struct slm__sug_cand *cands;
    int cands_cap;
} slm__suggest;

static void slm__sug_free(const slm_allocator *a, slm__suggest *g) {
    if (!g) return;
    slm__free(a, g->text_tokens);
    slm__free(a, g->ctx);
    slm__free(a, g->next_ctx);
    slm__free(a, g->root_logits);
    slm__free(a, g->probs);
    slm__free(a, g->nodes);
    slm__free(a, g->text);
    slm__free(a, g->tail);
    slm__free(a, g->logits);
    slm__free(a, g->rows);
    slm__free(a, g->order);
    slm__free(a, g->cands);
    slm__free(a, g);
}

/* Grows *p (of *cap elements of size el) to hold need elements. */
static int slm__sug_reserve(const slm_allocator *a, void **p, int *cap, size_t need, size_t el) {
    size_t n = *cap ? (size_t)*cap : 64;
    void *q;
    if (need <= (size_t)*cap) return 1;
    while (n < need) n *= 2;
    if (n > (size_t)INT_MAX / 2 || n > SIZE_MAX / el) return 0;
    q = slm__alloc(a, n * el);
    if (!q) return 0;
    if (*p) memcpy(q, *p, (size_t)*cap * el);
    slm__free(a, *p);
    *p = q;
    *cap = (int)n;
    return 1;
}

/* A monotonic clock in milliseconds, for the time budget. */
static double slm__now_ms(void) {
#if defined(_WIN32)
    LARGE_INTEGER freq, count; /* GetTickCount64 moves in steps of 15.6 ms */
    QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&count);
    return (double)count.QuadPart * 1e3 / (double)freq.QuadPart;
#elif defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
#elif defined(TIME_UTC)
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
#else
    return (double)clock() * 1e3 / CLOCKS_PER_SEC;
#endif
}

/* Letters, digits, ' and U+2019: what a keyboard treats as part of a word. */
static int slm__word_char(uint32_t cp) {
    int c;
    if (cp < 0x80) return (cp | 0x20) - 'a' < 26u || cp - '0' < 10u || cp == '\'';
    c = slm__uclass(cp);
    return c == 1 || c == 2 || cp == '\'' || cp == 0x2019;
}

SLM_API int slm_word_char(uint32_t cp) { return slm__word_char(cp); }

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF):
   the offset of the first bad byte, or -1. */
static long slm__utf8_invalid_at(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        const uint8_t *u = (const uint8_t *)s + i;
        uint32_t cp;
        size_t k = slm__utf8_decode(u, n - i, &cp);
        if (cp == 0xFFFD && !(k == 3 && u[0] == 0xEF && u[1] == 0xBF && u[2] == 0xBD)) return (long)i;
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return (long)i;
        i += k;
    }
    return -1;
}

/* The length of the complete UTF-8 character at s (n bytes available), 0
   when the bytes there are a character's start that needs more. */
static size_t slm__sug_char(const char *s, size_t n, uint32_t *cp) {
    uint8_t c = (uint8_t)s[0];
    size_t need = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    size_t i;
    for (i = 1; i < need && i < n; i++)
        if (((uint8_t)s[i] & 0xC0) != 0x80) break;
    if (i < need && i == n) return 0; /* cut short: wait for the next token */
    return slm__utf8_decode((const uint8_t *)s, n, cp);
}

/* What a path whose text is s says under the current tail (see the banner);
   *cand_len is the candidate's length from the word start when DONE. */
static int slm__sug_classify(const slm__suggest *g, const char *s, size_t len, int *cand_len) {
    size_t i, tl = (size_t)g->tail_len, ws = (size_t)g->word_start;
    int words = 0, in_word = 0;
    if (len < tl) return memcmp(s, g->tail, len) ? SLM__SUG_DEAD : SLM__SUG_TYPING;
    if (memcmp(s, g->tail, tl)) return SLM__SUG_DEAD;
    for (i = ws; i < len;) {
        uint32_t cp;
        size_t k = slm__sug_char(s + i, len - i, &cp);
        if (!k) break; /* the rest of the character comes with the next token */
        if (slm__word_char(cp)) {
            in_word = 1;
        } else if (in_word) {
            in_word = 0;
            if (++words == g->n_words) {
                if (i - ws >= sizeof(((slm_suggestion *)0)->text)) return SLM__SUG_DEAD; /* too long */
                *cand_len = (int)(i - ws);
                return SLM__SUG_DONE;
            }
        } else if (words == 0) {
            return SLM__SUG_DEAD; /* the word would be empty */
        }
        i += k;
    }
    /* still spelling: give up once the candidate cannot fit */
    return len - ws >= sizeof(((slm_suggestion *)0)->text) ? SLM__SUG_DEAD : SLM__SUG_OPEN;
}

static const char *slm__sug_text(const slm__suggest *g, const slm__sug_node *nd) { return g->text + nd->text_off; }

/* Adds a node for token t after parent p (-1: the root) when its path is
   still alive under the tail: 1 when it did, 0 when not, -1 out of memory. */
static int slm__sug_add(slm_session *s, slm__suggest *g, int p, slm_token t, double logp) {
    const slm__vocab *v = &s->model->vocab;
    const char *piece = v->piece + v->piece_off[t];
    size_t plen = v->piece_off[t + 1] - v->piece_off[t], base = p >= 0 ? g->nodes[p].text_len : 0, len = base + plen;
    slm__sug_node *nd;
    int state, cand_len = 0, tcap;
    if (plen == 0 || g->n_nodes >= SLM__SUG_MAX_NODES) return 0;
    if (len > (size_t)g->tail_len + 128) return 0; /* no candidate is that long */
    tcap = (int)SLM__MIN(g->text_cap, (size_t)INT_MAX);
    if (g->text_len + len > (size_t)tcap) {
        if (!slm__sug_reserve(&s->alloc, (void **)&g->text, &tcap, g->text_len + len, 1)) return -1;
        g->text_cap = (size_t)tcap;
    }
    if (p >= 0) memcpy(g->text + g->text_len, g->text + g->nodes[p].text_off, base);
    memcpy(g->text + g->text_len + base, piece, plen);
    state = slm__sug_classify(g, g->text + g->text_len, len, &cand_len);
    if (state == SLM__SUG_DEAD) return 0;
    if (!slm__sug_reserve(&s->alloc, (void **)&g->nodes, &g->nodes_cap, (size_t)g->n_nodes + 1, sizeof *nd)) return -1;
    nd = &g->nodes[g->n_nodes++];
    nd->parent = p;
    nd->token = t;
    nd->branch = -1;
    nd->expanded = 0;
    nd->row = -1;
    nd->cover = 0.0;
    nd->cover_tail = -1;
    nd->state = state;
    nd->cand_len = cand_len;
    nd->logp = logp;
    nd->text_off = (uint32_t)g->text_len;
    nd->text_len = (uint32_t)len;
    g->text_len += len;
    return 1;
}

/* Keeps, in c[0..returned), the candidates at or above a threshold that
   leaves at least k of the n (logits in [lo, hi]): a histogram of the
   logits finds it in two passes, so that quickselect sorts out a few
   hundred candidates rather than a whole vocabulary. */
#define SLM__SUG_BINS 256
static int slm__sug_bin(float x, float lo, float scale) {
    int b = (int)((x - lo) * scale);
    return SLM__MIN(SLM__MAX(b, 0), SLM__SUG_BINS - 1);
}
static int slm__sug_above(slm__cand *c, int n, int k, float lo, float hi) {
    int count[SLM__SUG_BINS] = { 0 }, i, b, m = 0, have = 0;
    float scale = hi > lo ? (float)(SLM__SUG_BINS - 1) / (hi - lo) : 0.0f;
    for (i = 0; i < n; i++) count[slm__sug_bin(c[i].logit, lo, scale)]++;
    for (b = SLM__SUG_BINS - 1; b > 0 && have + count[b] < k; b--) have += count[b];
    for (i = 0; i < n; i++)
        if (slm__sug_bin(c[i].logit, lo, scale) >= b) c[m++] = c[i];
    return m;
}

/* The children of node p (-1: the root) from its logits: the
   SLM__SUG_CHILDREN likeliest tokens a keyboard path can take, above
   SLM__SUG_CHILD_MIN. A child that first reaches past the tail counts in the
   denominator even when it has no node (it ends the word empty, or it is
   past the likeliest): that mass is kept in the node's cover, valid for the
   tail it was made for. */
static int slm__sug_expand(slm_session *s, slm__suggest *g, int p, const float *logits) {
    const slm__vocab *v = &s->model->vocab;
    int n_vocab = s->model->info.n_vocab, t, n_c = 0, i, all_finite = 1, arg = 0;
    size_t base_len = p >= 0 ? g->nodes[p].text_len : 0, rem = 0;
    double base = p >= 0 ? g->nodes[p].logp : 0.0, sum = 0.0, lse, cover = 0.0, ends = 0.0;
    float max = -FLT_MAX, cut;
    slm__cand *c = s->cand;
    for (t = 0; t < n_vocab; t++) {
        if (!slm__finite(logits[t])) {
            all_finite = 0;
        } else if (logits[t] > max) {
            max = logits[t];
            arg = t;
        }
    }
    if (p >= 0) g->nodes[p].expanded = 1;
    if (max == -FLT_MAX) return 1; /* no finite logit: nothing follows */
    if (all_finite) {
        /* the vectorised softmax: its top probability is 1 / the sum */
        memcpy(g->probs, logits, (size_t)n_vocab * sizeof(float));
        slm__softmax(g->probs, n_vocab, 1.0f);
        lse = (double)max - log((double)g->probs[arg]);
    } else {
        for (t = 0; t < n_vocab; t++)
            if (slm__finite(logits[t])) sum += (double)expf(logits[t] - max);
        lse = (double)max + log(sum);
    }
    cut = (float)(lse + SLM__SUG_CHILD_MIN);
    if (base_len < (size_t)g->tail_len) rem = (size_t)g->tail_len - base_len; /* tail still to spell */
    for (t = 0; t < n_vocab; t++) {
        int type;
        if (!slm__finite(logits[t]) || logits[t] < cut) continue;
        type = v->types[t] ? (int)v->types[t] : (int)SLM_TOKEN_NORMAL;
        if (type != SLM_TOKEN_NORMAL && type != SLM_TOKEN_BYTE) continue; /* ends the text, or no text */
        if (rem) { /* must spell the tail on: count those that reach past it */
            size_t plen = v->piece_off[t + 1] - v->piece_off[t];
            if (memcmp(v->piece + v->piece_off[t], g->tail + base_len, SLM__MIN(plen, rem))) continue;
            if (plen >= rem) cover += exp(base + ((double)logits[t] - lse));
        }
        c[n_c].logit = logits[t];
        c[n_c++].id = (slm_token)t;
    }
    if (n_c > SLM__SUG_CHILDREN) {
        n_c = slm__sug_above(c, n_c, SLM__SUG_CHILDREN, cut, max);
        slm__select_top(c, n_c, SLM__SUG_CHILDREN);
        n_c = SLM__SUG_CHILDREN;
    }
    for (i = 0; i < n_c; i++) {
        double lp = base + ((double)c[i].logit - lse);
        int made = slm__sug_add(s, g, p, c[i].id, lp);
        if (made < 0) return 0;
        if (made && g->nodes[g->n_nodes - 1].state == SLM__SUG_DONE) ends += exp((double)c[i].logit - lse);
        /* its node counts in the denominator itself */
        if (made && rem && g->nodes[g->n_nodes - 1].text_len >= (uint32_t)g->tail_len) cover -= exp(lp);
    }
    if (p >= 0 && g->nodes[p].state == SLM__SUG_OPEN) {
        g->end_max = SLM__MAX(g->end_max, ends);
        if (g->end_seen < INT_MAX) g->end_seen++;
    }
    if (p >= 0) {
        g->nodes[p].cover = cover;
        g->nodes[p].cover_tail = g->tail_len;
    } else {
        g->root_cover = cover;
        g->root_cover_tail = g->tail_len;
    }
    return 1;
}

typedef struct slm__sug_cand {
    const char *text;
    int len;
    double mass;
} slm__sug_cand;

static int slm__sug_cand_cmp(const void *pa, const void *pb) {
    const slm__sug_cand *a = (const slm__sug_cand *)pa, *b = (const slm__sug_cand *)pb;
    int c = memcmp(a->text, b->text, (size_t)SLM__MIN(a->len, b->len));
    return c ? c : (a->len > b->len) - (a->len < b->len);
}
static int slm__sug_rank_cmp(const void *pa, const void *pb) {
    const slm__sug_cand *a = (const slm__sug_cand *)pa, *b = (const slm__sug_cand *)pb;
    if (a->mass != b->mass) return a->mass > b->mass ? -1 : 1;
    return slm__sug_cand_cmp(pa, pb);
}

/* Is any word of the candidate on the blocklist? */
static int slm__sug_blocked(const slm_suggest_opts *o, const char *text, int len) {
    int i = 0, j, b;
    while (i < len) {
        uint32_t cp;
        int k;
        for (j = i; j < len; j += k) {
            k = (int)slm__utf8_decode((const uint8_t *)text + j, (size_t)(len - j), &cp);
            if (!slm__word_char(cp)) break;
        }
        for (b = 0; b < o->n_blocklist && j > i; b++)
            if (o->blocklist[b] && strlen(o->blocklist[b]) == (size_t)(j - i) &&
                !memcmp(o->blocklist[b], text + i, j - i))
                return 1;
        if (j == i) j += (int)slm__utf8_decode((const uint8_t *)text + j, (size_t)(len - j), &cp);
        i = j;
    }
    return 0;
}

/* Is the node's word so far (an OPEN node) a prefix of the candidate? */
static int slm__sug_compatible(const slm__suggest *g, const slm__sug_node *nd, const slm__sug_cand *c) {
    size_t n = nd->text_len - (size_t)g->word_start;
    return n <= (size_t)c->len && !memcmp(slm__sug_text(g, nd) + g->word_start, c->text, n);
}

typedef struct slm__sug_result {
    slm__sug_cand *cands; /* ranked; the first n_top are reported */
    int n_cands, n_top;
    double denom;
} slm__sug_result;

/* Recomputes every node's state under the tail, the denominator and the
   ranked candidates. cands has room for every node. */
static void slm__sug_score(slm__suggest *g, const slm_suggest_opts *o, int n, slm__sug_result *r) {
    int i, j, k;
    double denom = g->tail_len == 0 ? 1.0 : g->root_cover_tail == g->tail_len ? g->root_cover : 0.0;
    r->n_cands = 0;
    for (i = 0; i < g->n_nodes; i++) {
        slm__sug_node *nd = &g->nodes[i];
        nd->state = slm__sug_classify(g, slm__sug_text(g, nd), nd->text_len, &nd->cand_len);
        if (g->tail_len && nd->expanded && nd->cover_tail == g->tail_len) denom += nd->cover;
        /* a path covers the tail at its first node that reaches past it */
        if (g->tail_len && (nd->state == SLM__SUG_OPEN || nd->state == SLM__SUG_DONE) &&
            (nd->parent < 0 || g->nodes[nd->parent].text_len < (uint32_t)g->tail_len))
            denom += exp(nd->logp);
        if (nd->state == SLM__SUG_DONE) {
            slm__sug_cand *c = &r->cands[r->n_cands++];
            c->text = slm__sug_text(g, nd) + g->word_start;
            c->len = nd->cand_len;
            c->mass = exp(nd->logp);
        }
    }
    /* one entry per distinct candidate, its paths' masses summed */
    qsort(r->cands, (size_t)r->n_cands, sizeof *r->cands, slm__sug_cand_cmp);
    for (i = 0, k = 0; i < r->n_cands; i = j) {
        double mass = 0.0;
        for (j = i; j < r->n_cands && !slm__sug_cand_cmp(&r->cands[i], &r->cands[j]); j++) mass += r->cands[j].mass;
        if (slm__sug_blocked(o, r->cands[i].text, r->cands[i].len)) continue;
        r->cands[k] = r->cands[i];
        r->cands[k].mass = denom > 0 ? mass / denom : 0.0;
        if (r->cands[k].mass >= (double)o->min_prob) k++;
    }
    r->n_cands = k;
    qsort(r->cands, (size_t)r->n_cands, sizeof *r->cands, slm__sug_rank_cmp);
    r->n_top = SLM__MIN(n, r->n_cands);
    r->denom = denom;
}

static int slm__sug_before(const slm__suggest *g, int a, int b) {
    return g->nodes[a].logp > g->nodes[b].logp || (g->nodes[a].logp == g->nodes[b].logp && a < b);
}

/* Nodes for the next pass, most probable first, into g->order; returns
   how many (at most SLM__SUG_BATCH). A node is wanted when it could still
   add to a reported candidate more than SLM__SUG_REL_EPS of its
   probability, or when its word could reach the bar (the n-th candidate,
   or min_prob while fewer are known) if it ended as likely as the likeliest
   word end this session has seen (after SLM__SUG_END_EVIDENCE nodes; until
   then as likely as 1). A trained model ends whole words with a
   probability near 1, so that estimate seldom prunes; a flat distribution
   is spared a pass for every word that could only tie with the bar. A pass
   with room left takes the likeliest nodes whose text is a prefix of a
   wanted one's ("T" for "Than"): once the longer one is a candidate, they
   are wanted for the mass they add to it, one pass later. */
static int slm__sug_frontier(slm__suggest *g, const slm_suggest_opts *o, int n, const slm__sug_result *r) {
    int i, j, k, m = 0;
    double bar = r->n_top == n ? r->cands[n - 1].mass : (double)o->min_prob,
           end = g->end_seen >= SLM__SUG_END_EVIDENCE ? g->end_max : 1.0;
    for (i = 0; i < g->n_nodes; i++) {
        const slm__sug_node *nd = &g->nodes[i];
        double p;
        int want = 0;
        if (nd->expanded || (nd->state != SLM__SUG_OPEN && nd->state != SLM__SUG_TYPING)) continue;
        if (r->denom <= 0) {
            want = nd->state == SLM__SUG_TYPING; /* nothing covers the tail yet */
        } else {
            p = exp(nd->logp) / r->denom;
            want = p * end >= bar * (1.0 - 1e-6) && p > 0;
            for (j = 0; !want && j < r->n_top; j++)
                want = p >= SLM__SUG_REL_EPS * r->cands[j].mass &&
                       (nd->state == SLM__SUG_TYPING || slm__sug_compatible(g, nd, &r->cands[j]));
        }
        if (want) g->order[m++] = i;
    }
    /* the SLM__SUG_BATCH most probable first (ties to the older node) */
    for (i = 0; i < SLM__MIN(m, SLM__SUG_BATCH); i++) {
        int best = i, x;
        for (j = i + 1; j < m; j++)
            if (slm__sug_before(g, g->order[j], g->order[best])) best = j;
        x = g->order[i];
        g->order[i] = g->order[best];
        g->order[best] = x;
    }
    if (m == 0 || m >= SLM__SUG_BATCH) return SLM__MIN(m, SLM__SUG_BATCH);
    for (i = 0, k = m; i < g->n_nodes; i++) { /* order[m..k): the prefixes, likeliest first */
        const slm__sug_node *nd = &g->nodes[i];
        int x;
        if (nd->expanded || (nd->state != SLM__SUG_OPEN && nd->state != SLM__SUG_TYPING)) continue;
        if (k == SLM__SUG_BATCH && !slm__sug_before(g, i, g->order[k - 1])) continue;
        for (j = 0; j < m && g->order[j] != i; j++) {}
        if (j < m) continue;
        for (j = 0; j < m; j++) {
            const slm__sug_node *w = &g->nodes[g->order[j]];
            if (w->text_len > nd->text_len && !memcmp(slm__sug_text(g, w), slm__sug_text(g, nd), nd->text_len)) break;
        }
        if (j == m) continue;
        if (k < SLM__SUG_BATCH) k++;
        for (x = k - 1; x > m && slm__sug_before(g, i, g->order[x - 1]); x--) g->order[x] = g->order[x - 1];
        g->order[x] = i;
    }
    return k;
}

/* Keeps node x's logits in place of the least likely kept row, if x is likelier. */
static void slm__sug_keep_row(slm__suggest *g, int x, const float *logits, size_t nv) {
    int i, low = 0;
    for (i = 0; i < SLM__SUG_ROWS; i++) {
        if (g->row_node[i] < 0) {
            low = i;
            break;
        }
        if (g->nodes[g->row_node[i]].logp < g->nodes[g->row_node[low]].logp) low = i;
    }
    if (g->row_node[low] >= 0) {
        if (g->nodes[g->row_node[low]].logp >= g->nodes[x].logp) return;
        g->nodes[g->row_node[low]].row = -1;
    }
    g->row_node[low] = x;
    g->nodes[x].row = low;
    memcpy(g->rows + (size_t)low * nv, logits, nv * sizeof(float));
}

/* When the new context is the old one plus the path of an evaluated node
   whose logits are kept (the word just finished), makes that path the
   context without a pass. */
static int slm__sug_promote(slm_session *s, slm__suggest *g, const slm_token *ctx, int n) {
    int x, d, y;
    if (!g->tree_valid || !g->root_valid || s->n_past != g->n_ctx_tokens || n <= g->n_ctx_tokens ||
        slm_branch_count(s) != g->n_branches || memcmp(ctx, g->ctx, (size_t)g->n_ctx_tokens * sizeof *ctx))
        return 0;
    for (x = 0; x < g->n_nodes; x++) {
        if (g->nodes[x].row < 0 || g->nodes[x].branch < 0) continue;
        for (d = 0, y = x; y >= 0; y = g->nodes[y].parent) d++;
        if (g->n_ctx_tokens + d != n) continue;
        for (y = x; y >= 0 && g->nodes[y].token == ctx[g->n_ctx_tokens + --d]; y = g->nodes[y].parent) {}
        if (y >= 0) continue;
        if (slm_branch_keep(s, g->nodes[x].branch) != SLM_OK) return 0;
        memcpy(g->root_logits, g->rows + (size_t)g->nodes[x].row * s->model->info.n_vocab,
               (size_t)s->model->info.n_vocab * sizeof(float));
        memcpy(g->ctx, ctx, (size_t)n * sizeof *ctx);
        g->n_ctx_tokens = n;
        return 1;
    }
    return 0;
}

/* Evaluates nodes order[0..m) as one branch batch and grows their children. */
static slm_result slm__sug_step(slm_session *s, slm__suggest *g, const int *order, int m) {
    slm_token toks[SLM__SUG_BATCH];
    int parents[SLM__SUG_BATCH], i, first = slm_branch_count(s);
    size_t nv = (size_t)s->model->info.n_vocab;
    slm_result r;
    for (i = 0; i < m; i++) {
        const slm__sug_node *nd = &g->nodes[order[i]];
        toks[i] = nd->token;
        parents[i] = nd->parent >= 0 ? g->nodes[nd->parent].branch : -1;
    }
    r = slm_eval_branches(s, toks, parents, m, g->logits);
    if (r != SLM_OK) return r;
    for (i = 0; i < m; i++) g->nodes[order[i]].branch = first + i;
    g->n_branches = first + m;
    for (i = 0; i < m; i++) {
        slm__sug_keep_row(g, order[i], g->logits + (size_t)i * nv, nv);
        if (!slm__sug_expand(s, g, order[i], g->logits + (size_t)i * nv))
            return slm__fail(s, SLM_ERR_OOM, "slm_suggest: out of memory");
    }
    return SLM_OK;
}

/* Token healing: the back-off point k of tokens t[first..n) whose pieces
   spell the text, the current word starting at byte word_at of that piece
   text. */
static int slm__sug_backoff(const slm_model *m, const slm_token *t, int first, int n, size_t word_at) {
    const slm__vocab *v = &m->vocab;
    size_t end = 0, tail = 0;
    int k = n, i, healed = 0;
    for (i = first; i < n; i++) end += v->piece_off[t[i] + 1] - v->piece_off[t[i]];
    /* every token that holds a byte of the current word */
    while (k > first && end > word_at) {
        size_t plen = v->piece_off[t[k - 1] + 1] - v->piece_off[t[k - 1]];
        end -= plen;
        tail += plen;
        k--;
    }
    /* then each token a longer token could extend into the text after it */
    while (k > first && healed < SLM__SUG_HEAL_MAX) {
        const char *p = v->piece + v->piece_off[t[k - 1]];
        size_t plen = v->piece_off[t[k - 1] + 1] - v->piece_off[t[k - 1]];
        int u, found = 0;
        for (u = 0; u < v->n_tokens && !found; u++) {
            size_t ulen = v->piece_off[u + 1] - v->piece_off[u], r;
            const char *up = v->piece + v->piece_off[u];
            if (ulen <= plen || (v->types[u] && v->types[u] != SLM_TOKEN_NORMAL) || memcmp(up, p, plen)) continue;
            /* the rest of the longer token against the tail, which the caller
               passes as the pieces of t[k..n) */
            r = SLM__MIN(ulen - plen, tail);
            found = 1;
            {
                size_t off = 0;
                int j;
                /* compare r bytes of up + plen with the tail's first r bytes */
                for (j = k; j < n && off < r; j++) {
                    size_t jl = v->piece_off[t[j] + 1] - v->piece_off[t[j]], c = SLM__MIN(jl, r - off);
                    if (memcmp(up + plen + off, v->piece + v->piece_off[t[j]], c)) {
                        found = 0;
                        break;
                    }
                    off += c;
                }
            }
        }
        if (!found) break;
        tail += plen;
        k--;
        healed++;
    }
    return k;
}

/* Bytes of text a keystroke tokenizes once the text is past the context: at
   most about twice this (the cut moves when the window does) */
#define SLM__SUG_CUT_BYTES(n_ctx) ((size_t)(n_ctx)*8)

/* 1 when byte c of text is a space between two ASCII letters: a place to
   start tokenizing that a cuttable model tokenizes the same from (its first
   word aside) as the whole text. */
static int slm__sug_letter(char b) { return ((uint8_t)b | 32) >= 'a' && ((uint8_t)b | 32) <= 'z'; }
static int slm__sug_cut_at(const char *text, size_t len, size_t c) {
    return c > 0 && c + 1 < len && text[c] == ' ' && slm__sug_letter(text[c - 1]) && slm__sug_letter(text[c + 1]);
}

/* The first place at or after byte from that slm__sug_cut_at accepts, or 0. */
static size_t slm__sug_cut_find(const char *text, size_t len, size_t from) {
    size_t c;
    for (c = from; c + 1 < len; c++)
        if (slm__sug_cut_at(text, len, c)) return c;
    return 0;
}

/* 1 when the tokens of a text from a space between two letters on are the
   whole text's tokens from there (after the first word, which a
   SentencePiece model's dummy space may spell differently): a pre-tokenizer
   (GPT-2, Llama 3, Qwen2, StarCoder) always starts a word there, and merges
   cannot join across a space when no piece holds a space after another
   byte. */
static int slm__sug_cuttable(const slm__vocab *v) {
    int t;
    uint32_t i;
    if (v->kind == SLM_TOKENIZER_BPE && v->pre >= SLM_PRETOK_GPT2 && v->pre <= SLM_PRETOK_STARCODER) return 1;
    for (t = 0; t < v->n_tokens; t++)
        for (i = v->piece_off[t] + 1; i < v->piece_off[t + 1]; i++)
            if (v->piece[i] == ' ' && v->piece[i - 1] != ' ') return 0;
    return 1;
}

/* The first of tokens t[first..n) that starts the text's second word (a
   piece that starts with a space after a byte that is not one), or n: from
   there on, tokens of a text from a cut are the whole text's. */
static int slm__sug_second_word(const slm__vocab *v, const slm_token *t, int first, int n) {
    int i;
    char last = ' ';
    for (i = first; i < n; i++) {
        uint32_t a = v->piece_off[t[i]], b = v->piece_off[t[i] + 1];
        if (b == a) continue;
        if (i > first && v->piece[a] == ' ' && last != ' ') return i;
        last = v->piece[b - 1];
    }
    return n;
}

static int slm__sug_fail(slm_session *s, slm_result r, const char *fmt, const char *detail) {
    slm__fail(s, r, fmt, detail);
    return -(int)r;
}

/* Makes the session's prefix hold ctx[0..n) with the root's logits in
   g->root_logits, evaluating only what the cache lacks. */
static slm_result slm__sug_context(slm_session *s, slm__suggest *g, const slm_token *ctx, int n) {
    int common = 0;
    slm_result r;
    while (common < n && common < s->n_past && s->tokens[common] == ctx[common]) common++;
    if (common == n && s->n_past == n && g->root_valid && g->n_ctx_tokens == n &&
        !memcmp(g->ctx, ctx, (size_t)n * sizeof *ctx))
        return slm_rewind(s, n); /* same context: only the tree's nodes go */
    g->root_valid = 0;
    if (common == n) common--; /* the last token is run again for its logits */
    if ((r = slm_rewind(s, common)) != SLM_OK) return r;
    if ((r = slm_eval(s, ctx + common, n - common)) != SLM_OK) return r;
    memcpy(g->root_logits, slm_logits(s), (size_t)s->model->info.n_vocab * sizeof(float));
    if (!slm__sug_reserve(&s->alloc, (void **)&g->ctx, &g->ctx_cap, (size_t)n, sizeof *ctx))
        return slm__fail(s, SLM_ERR_OOM, "slm_suggest: out of memory");
    memcpy(g->ctx, ctx, (size_t)n * sizeof *ctx);
    g->n_ctx_tokens = n;
    g->root_valid = 1;
    return SLM_OK;
}

SLM_API int slm_suggest(slm_session *s, const char *text, slm_suggestion *out, int n, const slm_suggest_opts *opts) {
    const slm_model *m;
    const slm__vocab *v;
    slm__suggest *g;
    slm_suggest_opts o;
    slm__sug_result res;
    slm_token *toks = NULL, *ctx = NULL, lead;
    size_t len, word_at, word_len, piece_len;
    long bad;
    int nt, first, window, slid, k, i, n_ctx_toks, tail_len, word_start, reuse, passes = 0, ret;
    double t0 = slm__now_ms();
    slm_result r = SLM_OK;
    if (!s) return -(int)SLM_ERR_INVALID_ARG;
    if (!text) return slm__sug_fail(s, SLM_ERR_INVALID_ARG, "slm_suggest: text is NULL%s", "");
    if (n <= 0 || !out) {
        slm__fail(s, SLM_ERR_INVALID_ARG, "slm_suggest: need room for a suggestion (n %d, out %s)", n,
                  out ? "set" : "NULL");
        return -(int)SLM_ERR_INVALID_ARG;
    }
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    if (o.n_words < 0 || o.n_words > SLM__SUG_MAX_WORDS || !(o.min_prob >= 0.0f && o.min_prob <= 1.0f) ||
        o.max_ms < 0 || o.n_blocklist < 0 || (o.n_blocklist > 0 && !o.blocklist)) {
        slm__fail(s, SLM_ERR_INVALID_ARG,
                  "slm_suggest: invalid options (n_words %d of 0..%d, min_prob %g, max_ms %d, n_blocklist %d%s)",
                  o.n_words, SLM__SUG_MAX_WORDS, (double)o.min_prob, o.max_ms, o.n_blocklist,
                  o.n_blocklist > 0 && !o.blocklist ? " with no blocklist" : "");
        return -(int)SLM_ERR_INVALID_ARG;
    }
    if (o.n_words == 0) o.n_words = 1;
    if (o.min_prob == 0.0f) o.min_prob = (float)SLM__SUG_MIN_PROB;
    len = strlen(text);
    if ((bad = slm__utf8_invalid_at(text, len)) >= 0) {
        slm__fail(s, SLM_ERR_INVALID_ARG, "slm_suggest: the text is not valid UTF-8 (byte %ld)", bad);
        return -(int)SLM_ERR_INVALID_ARG;
    }
    m = s->model;
    v = &m->vocab;
    if (!s->suggest) {
        s->suggest = (slm__suggest *)slm__alloc(&s->alloc, sizeof(slm__suggest));
        if (!s->suggest) return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
        memset(s->suggest, 0, sizeof(slm__suggest));
        s->suggest->root_logits = (float *)slm__alloc(&s->alloc, (size_t)m->info.n_vocab * sizeof(float));
        s->suggest->probs = (float *)slm__alloc(&s->alloc, (size_t)m->info.n_vocab * sizeof(float));
        s->suggest->logits = (float *)slm__alloc(&s->alloc, (size_t)m->info.n_vocab * SLM__SUG_BATCH * sizeof(float));
        s->suggest->rows = (float *)slm__alloc(&s->alloc, (size_t)m->info.n_vocab * SLM__SUG_ROWS * sizeof(float));
        s->suggest->next_ctx = (slm_token *)slm__alloc(&s->alloc, ((size_t)s->n_ctx + 1) * sizeof(slm_token));
        if (!s->suggest->root_logits || !s->suggest->probs || !s->suggest->logits || !s->suggest->rows ||
            !s->suggest->next_ctx) {
            slm__sug_free(&s->alloc, s->suggest);
            s->suggest = NULL;
            return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
        }
    }
    g = s->suggest;

    /* the current word: the word characters that end the text */
    for (word_at = len; word_at > 0;) {
        size_t b = word_at - 1;
        uint32_t cp;
        while (b > 0 && ((uint8_t)text[b] & 0xC0) == 0x80) b--;
        slm__utf8_decode((const uint8_t *)text + b, len - b, &cp);
        if (!slm__word_char(cp)) break;
        word_at = b;
    }
    word_len = len - word_at;

    /* the tokens of the text from g->cut on, BOS first when the model wants
       one; a cut that the text no longer allows goes */
    first = (v->flags & SLM__TOKFLAG_ADD_BOS) && v->bos >= 0;
    lead = first ? v->bos : -1;
    if (g->cut && !slm__sug_cut_at(text, len, g->cut)) g->cut = 0;
    if ((r = slm__tokenize_alloc(s, text + g->cut, len - g->cut, 0, lead, &toks, &nt, "slm_suggest")) != SLM_OK)
        return -(int)r;

    /* the window: kept from the last call while its tokens are the same and
       the text still fits with room for the search, else the last n_ctx / 2;
       one that would hold the first word after the cut (a long backspace)
       takes the whole text's tokens again */
    for (;;) {
        window = first;
        if (g->window > first && g->window <= nt && g->window <= g->n_text_tokens &&
            !memcmp(g->text_tokens, toks, (size_t)g->window * sizeof *toks))
            window = g->window;
        slid = first + (nt - window) > s->n_ctx - s->n_ctx / 4;
        if (slid) window = SLM__MAX(first, nt - s->n_ctx / 2);
        if (!g->cut || window >= slm__sug_second_word(v, toks, first, nt)) break;
        slm__free(&s->alloc, toks);
        g->cut = 0;
        if ((r = slm__tokenize_alloc(s, text, len, 0, lead, &toks, &nt, "slm_suggest")) != SLM_OK) return -(int)r;
    }
    if (slid) {
        /* the window moved, and the context with it: the time to move the
           cut up to SLM__SUG_CUT_BYTES before the end, where its tokens still
           hold the window */
        if (!g->cuttable) g->cuttable = slm__sug_cuttable(v) ? 1 : -1;
        if (g->cuttable > 0 && len - g->cut > 2 * SLM__SUG_CUT_BYTES(s->n_ctx)) {
            size_t c = slm__sug_cut_find(text, len, len - SLM__SUG_CUT_BYTES(s->n_ctx));
            slm_token *t2;
            int n2;
            if (c > g->cut) {
                if ((r = slm__tokenize_alloc(s, text + c, len - c, 0, lead, &t2, &n2, "slm_suggest")) != SLM_OK) {
                    slm__free(&s->alloc, toks);
                    return -(int)r;
                }
                if (n2 - first >= s->n_ctx && n2 - s->n_ctx / 2 >= slm__sug_second_word(v, t2, first, n2)) {
                    slm__free(&s->alloc, toks);
                    toks = t2;
                    nt = n2;
                    g->cut = c;
                    window = nt - s->n_ctx / 2;
                } else {
                    slm__free(&s->alloc, t2);
                }
            }
        }
    }
    ctx = g->next_ctx; /* the window's rule keeps it under n_ctx - n_ctx / 4 tokens */
    if (!slm__sug_reserve(&s->alloc, (void **)&g->text_tokens, &g->text_tokens_cap, (size_t)nt, sizeof *toks)) {
        slm__free(&s->alloc, toks);
        return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
    }
    if (nt) memcpy(g->text_tokens, toks, (size_t)nt * sizeof *toks);
    g->n_text_tokens = nt;
    g->window = window;

    /* token healing, on the window's pieces; the word is their last bytes */
    for (piece_len = 0, i = window; i < nt; i++) piece_len += v->piece_off[toks[i] + 1] - v->piece_off[toks[i]];
    k = piece_len >= word_len ? slm__sug_backoff(m, toks, window, nt, piece_len - word_len) : nt;
    n_ctx_toks = 0;
    if (first) ctx[n_ctx_toks++] = v->bos;
    for (i = window; i < k; i++) ctx[n_ctx_toks++] = toks[i];
    if (n_ctx_toks == 0) {
        if (v->eos < 0) {
            slm__free(&s->alloc, toks);
            return slm__sug_fail(s, SLM_ERR_UNSUPPORTED,
                                 "slm_suggest: the model has neither BOS nor EOS to start a text with%s", "");
        }
        ctx[n_ctx_toks++] = v->eos;
    }

    /* the tail: the pieces of the backed-off tokens (SentencePiece's dummy
       space alone when nothing is typed) */
    for (tail_len = 0, i = k; i < nt; i++) tail_len += (int)(v->piece_off[toks[i] + 1] - v->piece_off[toks[i]]);
    if (len == 0 && (v->flags & SLM__TOKFLAG_SPACE_PREFIX)) tail_len = 1;
    word_start = tail_len - (int)word_len;
    reuse = g->tree_valid && g->n_words == o.n_words && g->word_start == word_start && tail_len >= g->tail_len &&
            s->n_past == n_ctx_toks && g->n_ctx_tokens == n_ctx_toks &&
            !memcmp(g->ctx, ctx, (size_t)n_ctx_toks * sizeof *ctx) &&
            !memcmp(s->tokens, ctx, (size_t)n_ctx_toks * sizeof *ctx) && slm_branch_count(s) == g->n_branches;
    if (!slm__sug_reserve(&s->alloc, (void **)&g->tail, &g->tail_cap, 2 * ((size_t)tail_len + 1), 1)) {
        slm__free(&s->alloc, toks);
        return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
    }
    {
        /* the new tail goes after the old one's room, then replaces it */
        char *fresh = g->tail + tail_len + 1, *p = fresh;
        if (len == 0 && tail_len == 1) *p = ' ';
        for (i = k; i < nt; i++) {
            size_t pl = v->piece_off[toks[i] + 1] - v->piece_off[toks[i]];
            memcpy(p, v->piece + v->piece_off[toks[i]], pl);
            p += pl;
        }
        if (reuse && memcmp(fresh, g->tail, (size_t)g->tail_len)) reuse = 0;
        memmove(g->tail, fresh, (size_t)tail_len);
    }
    /* the word must be what the pieces end with (not so when a character
       became the unknown token): then there is nothing to complete */
    if (word_start < 0 || memcmp(g->tail + word_start, text + word_at, word_len)) {
        slm__free(&s->alloc, toks);
        g->tree_valid = 0;
        return 0;
    }
    g->tail_len = tail_len;
    g->word_start = word_start;
    g->n_words = o.n_words;

    if (reuse) slm__free(&s->alloc, toks);
    if (!reuse) {
        if (!slm__sug_reserve(&s->alloc, (void **)&g->ctx, &g->ctx_cap, (size_t)n_ctx_toks, sizeof *ctx)) {
            slm__free(&s->alloc, toks);
            return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
        }
        r = slm__sug_promote(s, g, ctx, n_ctx_toks) ? SLM_OK : slm__sug_context(s, g, ctx, n_ctx_toks);
        slm__free(&s->alloc, toks);
        g->tree_valid = 0;
        g->n_nodes = 0;
        g->text_len = 0;
        g->n_branches = 0;
        for (i = 0; i < SLM__SUG_ROWS; i++) g->row_node[i] = -1;
        if (r != SLM_OK) return -(int)r;
        if (!slm__sug_expand(s, g, -1, g->root_logits))
            return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
        g->tree_valid = 1;
    }

    for (;;) {
        int want, room;
        if (!slm__sug_reserve(&s->alloc, (void **)&g->order, &g->order_cap, (size_t)g->n_nodes + 1, sizeof(int)) ||
            !slm__sug_reserve(&s->alloc, (void **)&g->cands, &g->cands_cap, (size_t)g->n_nodes + 1,
                              sizeof(slm__sug_cand))) {
            g->tree_valid = 0;
            return slm__sug_fail(s, SLM_ERR_OOM, "slm_suggest: out of memory%s", "");
        }
        res.cands = g->cands;
        slm__sug_score(g, &o, n, &res);
        want = slm__sug_frontier(g, &o, n, &res);
        room = s->n_ctx - s->n_past - slm_branch_count(s);
        want = SLM__MIN(want, room);
        if (want <= 0 || passes >= SLM__SUG_MAX_PASSES || g->n_nodes >= SLM__SUG_MAX_NODES) break;
        if (o.max_ms > 0 && slm__now_ms() - t0 >= (double)o.max_ms) break;
        if (o.cancel && o.cancel(o.user)) {
            slm__fail(s, SLM_ERR_CANCELLED, "slm_suggest: cancelled");
            return -(int)SLM_ERR_CANCELLED;
        }
        if ((r = slm__sug_step(s, g, g->order, want)) != SLM_OK) {
            g->tree_valid = 0;
            return -(int)r;
        }
        passes++;
    }
    for (ret = 0; ret < res.n_top; ret++) {
        memcpy(out[ret].text, res.cands[ret].text, (size_t)res.cands[ret].len);
        out[ret].text[res.cands[ret].len] = 0;
        out[ret].prob = (float)res.cands[ret].mass;
    }
    return ret;
}

/* ---- scoring ---------------------------------------------------------------
   Log-probabilities of given tokens. A pass computes the logits of each of
   its tokens into rows of n_vocab floats; each row is reduced to the
   log-softmax at the token that follows right away, so memory holds one
   pass's rows (n_batch of them), never a row per position of the text.
   Continuations of one context are chains of branch nodes; a node's row
   serves all its children, and leaves (the last token of a continuation)
   need no row at all. */

/* log-softmax of one row, as llama.cpp's perplexity tool computes it: the
   maximum subtracted in float, the exponentials summed in double */
typedef struct slm__lse {
    float max;
    double log_sum;
} slm__lse;

static slm__lse slm__row_lse(const float *row, int n) {
    slm__lse r;
    double sum = 0.0;
    int i;
    r.max = row[0];
    for (i = 1; i < n; i++)
        if (row[i] > r.max) r.max = row[i];
    for (i = 0; i < n; i++) sum += (double)expf(row[i] - r.max);
    r.log_sum = log(sum);
    return r;
}

static float slm__logprob_at(const float *row, slm__lse lse, slm_token tok) {
    return (float)((double)(row[tok] - lse.max) - lse.log_sum);
}

/* Scratch for up to `want` rows of logits: fewer when the session's
   max_bytes leaves less room; NULL (with the error set) when not one fits or
   the allocator says no. */
static float *slm__score_rows(slm_session *s, int want, int *rows, const char *fn) {
    size_t row_bytes = (size_t)s->model->info.n_vocab * sizeof(float);
    float *buf;
    *rows = 0;
    if (s->max_bytes) {
        size_t room = s->max_bytes > s->bytes ? s->max_bytes - s->bytes : 0;
        if ((size_t)want > room / row_bytes) want = (int)(room / row_bytes);
        if (want < 1) {
            slm__fail(s, SLM_ERR_OOM,
                      "%s: a row of logits takes %zu bytes; the session's %zu leave %zu of max_bytes %zu", fn,
                      row_bytes, s->bytes, room, s->max_bytes);
            return NULL;
        }
    }
    buf = (float *)slm__alloc(&s->alloc, (size_t)want * row_bytes);
    if (!buf) {
        slm__fail(s, SLM_ERR_OOM, "%s: out of memory for %zu bytes of logits", fn, (size_t)want * row_bytes);
        return NULL;
    }
    *rows = want;
    return buf;
}

SLM_API slm_result slm_eval_logprobs(slm_session *s, const slm_token *tokens, int n, float *logprobs,
                                     const slm_logprob_opts *opts) {
    size_t n_vocab;
    float *rows_buf;
    int i, r, rows, keep = opts && opts->keep_logits;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!tokens || n <= 0)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_eval_logprobs: need at least one token (got %d)", n);
    if (n > s->n_ctx - s->n_past)
        return slm__fail(s, SLM_ERR_CONTEXT_FULL,
                         "slm_eval_logprobs: %d tokens do not fit: %d of the %d-token context are used", n, s->n_past,
                         s->n_ctx);
    n_vocab = (size_t)s->model->info.n_vocab;
    for (i = 0; i < n; i++)
        if (tokens[i] < 0 || (size_t)tokens[i] >= n_vocab)
            return slm__fail(s, SLM_ERR_INVALID_ARG,
                             "slm_eval_logprobs: token %d at index %d is outside the vocabulary of %d", (int)tokens[i],
                             i, (int)n_vocab);
    slm__free(&s->alloc, s->kept_logits);
    s->kept_logits = NULL;
    s->n_kept = 0;
    if (keep) {
        size_t need = (size_t)n * n_vocab * sizeof(float);
        if (s->max_bytes && (s->bytes > s->max_bytes || need > s->max_bytes - s->bytes))
            return slm__fail(s, SLM_ERR_OOM,
                             "slm_eval_logprobs: the logits of %d positions take %zu bytes; with the session's %zu "
                             "that is over max_bytes %zu",
                             n, need, s->bytes, s->max_bytes);
        rows_buf = (float *)slm__alloc(&s->alloc, need);
        if (!rows_buf)
            return slm__fail(s, SLM_ERR_OOM,
                             "slm_eval_logprobs: out of memory for the logits of %d positions (%zu bytes)", n, need);
        rows = s->n_batch;
    } else {
        rows_buf = slm__score_rows(s, SLM__MIN(n, s->n_batch), &rows, "slm_eval_logprobs");
        if (!rows_buf) return SLM_ERR_OOM;
    }
    if (logprobs) {
        if (s->logits_valid)
            logprobs[0] = slm__logprob_at(s->logits, slm__row_lse(s->logits, (int)n_vocab), tokens[0]);
        else
            logprobs[0] = (float)NAN;
    }
    s->logits_valid = 0;
    s->n_nodes = 0;
    for (i = 0; i < n; i += rows) {
        int chunk = SLM__MIN(rows, n - i);
        float *out = keep ? rows_buf + (size_t)i * n_vocab : rows_buf;
        s->pass.tokens = tokens + i;
        s->pass.n = chunk;
        s->pass.node0 = -1;
        s->pass.logits = out;
        s->pass.n_logits = chunk;
        slm__forward(s);
        for (r = 0; logprobs && r < chunk && i + r + 1 < n; r++) {
            const float *row = out + (size_t)r * n_vocab;
            logprobs[i + r + 1] = slm__logprob_at(row, slm__row_lse(row, (int)n_vocab), tokens[i + r + 1]);
        }
        if (i + chunk == n) memcpy(s->logits, out + (size_t)(chunk - 1) * n_vocab, n_vocab * sizeof(float));
    }
    s->logits_valid = 1;
    if (keep) {
        s->kept_logits = rows_buf;
        s->n_kept = n;
    } else
        slm__free(&s->alloc, rows_buf);
    return SLM_OK;
}

SLM_API const float *slm_logits_row(const slm_session *s, int i) {
    if (!s || !s->kept_logits || i < 0 || i >= s->n_kept) return NULL;
    return s->kept_logits + (size_t)i * (size_t)s->model->info.n_vocab;
}

/* Brings the cache to exactly `context` with its last token's logits
   current, evaluating only what the cache does not already start with. */
static slm_result slm__score_context(slm_session *s, const slm_token *context, int n) {
    int common;
    for (common = 0; common < n && common < s->n_past && s->tokens[common] == context[common]; common++) {}
    if (common == n && s->n_past == n && s->logits_valid) return slm_rewind(s, n); /* drops the nodes only */
    if (common == n) common--;
    slm_rewind(s, common);
    return slm_eval(s, context + common, n - common);
}

SLM_API slm_result slm_score(slm_session *s, const slm_token *context, int n_context,
                             const slm_token *const *continuations, const int *lengths, int n, float *sums,
                             float *per_token) {
    /* the tree: node k holds token tok[k] after parent par[k] (-1: the
       context); children are listed through first_child / next_sibling;
       internal nodes (with a child) are evaluated, as eval_id[k] */
    int *par = NULL, *first_child, *next_sibling, *eval_id, *cont_node, *eval_node, *eval_par;
    slm_token *tok = NULL, *eval_tok;
    float *lp, *rows_buf = NULL;
    size_t n_vocab;
    int64_t total = 0;
    int i, j, k, n_nodes = 0, n_eval = 0, root_first = -1, rows, longest = 0;
    slm_result res = SLM_OK;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!context || n_context < 1)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_score: the context needs at least one token (BOS), got %d",
                         n_context);
    if (!continuations || !lengths || n < 1)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_score: need at least one continuation (got %d)", n);
    n_vocab = (size_t)s->model->info.n_vocab;
    for (i = 0; i < n_context; i++)
        if (context[i] < 0 || (size_t)context[i] >= n_vocab)
            return slm__fail(s, SLM_ERR_INVALID_ARG,
                             "slm_score: context token %d at index %d is outside the vocabulary of %d", (int)context[i],
                             i, (int)n_vocab);
    for (i = 0; i < n; i++) {
        if (!continuations[i] || lengths[i] < 1)
            return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_score: continuation %d is empty", i);
        for (j = 0; j < lengths[i]; j++)
            if (continuations[i][j] < 0 || (size_t)continuations[i][j] >= n_vocab)
                return slm__fail(s, SLM_ERR_INVALID_ARG,
                                 "slm_score: token %d at index %d of continuation %d is outside the vocabulary of %d",
                                 (int)continuations[i][j], j, i, (int)n_vocab);
        if (lengths[i] > longest) longest = lengths[i];
        total += lengths[i];
    }
    if (n_context > s->n_ctx || longest > s->n_ctx - n_context)
        return slm__fail(s, SLM_ERR_CONTEXT_FULL,
                         "slm_score: the context (%d tokens) and a continuation of %d tokens do not fit in the "
                         "%d-token context",
                         n_context, longest, s->n_ctx);
    /* one block: par, first_child, next_sibling, eval_id, eval_node, eval_par, cont_node; then tokens, lp */
    if (total > INT32_MAX / 16)
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_score: %lld continuation tokens are too many", (long long)total);
    par = (int *)slm__alloc(&s->alloc, (size_t)total * (7 * sizeof(int) + 2 * sizeof(slm_token) + sizeof(float)));
    if (!par) return slm__fail(s, SLM_ERR_OOM, "slm_score: out of memory");
    first_child = par + total;
    next_sibling = first_child + total;
    eval_id = next_sibling + total;
    eval_node = eval_id + total;
    eval_par = eval_node + total;
    cont_node = eval_par + total;
    tok = (slm_token *)(cont_node + total);
    eval_tok = tok + total;
    lp = (float *)(eval_tok + total);

    /* build the tree: a token after the same parent is the same node */
    for (i = 0, k = 0; i < n; i++) {
        int parent = -1;
        for (j = 0; j < lengths[i]; j++, k++) {
            slm_token t = continuations[i][j];
            int child = parent < 0 ? root_first : first_child[parent];
            while (child >= 0 && tok[child] != t) child = next_sibling[child];
            if (child < 0) {
                child = n_nodes++;
                tok[child] = t;
                par[child] = parent;
                first_child[child] = -1;
                eval_id[child] = -1;
                if (parent < 0) {
                    next_sibling[child] = root_first;
                    root_first = child;
                } else {
                    next_sibling[child] = first_child[parent];
                    first_child[parent] = child;
                }
            }
            cont_node[k] = child;
            parent = child;
        }
    }
    /* internal nodes in the order made: a parent before its children */
    for (k = 0; k < n_nodes; k++)
        if (first_child[k] >= 0) {
            eval_id[k] = n_eval;
            eval_node[n_eval] = k;
            eval_tok[n_eval] = tok[k];
            eval_par[n_eval] = par[k] < 0 ? -1 : eval_id[par[k]];
            n_eval++;
        }
    if ((res = slm__score_context(s, context, n_context)) != SLM_OK) goto done;
    if (n_eval > s->n_ctx - s->n_past) {
        res = slm__fail(s, SLM_ERR_CONTEXT_FULL,
                        "slm_score: the continuations need %d nodes after the %d-token context and the context "
                        "holds %d tokens: score fewer continuations at once",
                        n_eval, s->n_past, s->n_ctx);
        goto done;
    }
    {
        slm__lse lse = slm__row_lse(s->logits, (int)n_vocab);
        for (k = root_first; k >= 0; k = next_sibling[k]) lp[k] = slm__logprob_at(s->logits, lse, tok[k]);
    }
    if (n_eval > 0) {
        rows_buf = slm__score_rows(s, SLM__MIN(n_eval, s->n_batch), &rows, "slm_score");
        if (!rows_buf) {
            res = SLM_ERR_OOM;
            goto done;
        }
        for (i = 0; i < n_eval; i += rows) {
            int chunk = SLM__MIN(rows, n_eval - i), r;
            if ((res = slm_eval_branches(s, eval_tok + i, eval_par + i, chunk, rows_buf)) != SLM_OK) goto done;
            for (r = 0; r < chunk; r++) {
                const float *row = rows_buf + (size_t)r * n_vocab;
                slm__lse lse = slm__row_lse(row, (int)n_vocab);
                for (k = first_child[eval_node[i + r]]; k >= 0; k = next_sibling[k])
                    lp[k] = slm__logprob_at(row, lse, tok[k]);
            }
        }
    }
    for (i = 0, k = 0; i < n; i++) {
        double sum = 0.0;
        for (j = 0; j < lengths[i]; j++, k++) {
            if (per_token) per_token[k] = lp[cont_node[k]];
            sum += lp[cont_node[k]];
        }
        if (sums) sums[i] = (float)sum;
    }
done:
    if (s->n_nodes) slm_rewind(s, s->n_past); /* drop the nodes; the context's logits stay */
    slm__free(&s->alloc, rows_buf);
    slm__free(&s->alloc, par);
    return res;
}

SLM_API slm_result slm_classify(slm_session *s, const char *prompt, const char *const *labels, int n, float *probs,
                                double *log_likelihoods) {
    slm_token *p_toks = NULL, **toks = NULL;
    const slm_token **conts = NULL;
    int *n_toks = NULL, *shared = NULL, *lengths = NULL;
    float *per_token = NULL;
    double *ll = NULL, max_ll, sum;
    char *text = NULL;
    size_t plen, longest_label = 0;
    int i, j, n_p = 0, k_min, total = 0, flags = SLM_TOK_BOS | SLM_TOK_SPECIAL;
    slm_result res = SLM_OK;
    if (!s) return SLM_ERR_INVALID_ARG;
    if (!prompt) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_classify: prompt is NULL");
    if (!labels || n < 1) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_classify: need at least one label (got %d)", n);
    for (i = 0; i < n; i++) {
        if (!labels[i] || !labels[i][0])
            return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_classify: label %d is %s", i, labels[i] ? "empty" : "NULL");
        for (j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_classify: labels %d and %d are the same: \"%s\"", j, i,
                                 labels[i]);
        if (strlen(labels[i]) > longest_label) longest_label = strlen(labels[i]);
    }
    plen = strlen(prompt);
    /* pointers and counts in one block, then each tokenization on its own */
    toks =
        (slm_token **)slm__alloc(&s->alloc, (size_t)n * (2 * sizeof(slm_token *) + 3 * sizeof(int) + sizeof(double)));
    if (toks)
        for (i = 0; i < n; i++) toks[i] = NULL; /* freed at the end, whatever fails first */
    text = (char *)slm__alloc(&s->alloc, plen + longest_label + 1);
    if (!toks || !text) {
        res = slm__fail(s, SLM_ERR_OOM, "slm_classify: out of memory");
        goto done;
    }
    conts = (const slm_token **)(toks + n);
    ll = (double *)(conts + n);
    n_toks = (int *)(ll + n);
    shared = n_toks + n;
    lengths = shared + n;
    memcpy(text, prompt, plen);
    for (i = -1; i < n; i++) { /* -1: the prompt alone */
        size_t len = plen;
        slm_token *t;
        int cnt;
        if (i >= 0) {
            size_t ll_len = strlen(labels[i]);
            memcpy(text + plen, labels[i], ll_len);
            len += ll_len;
        }
        if ((res = slm__tokenize_alloc(s, text, len, flags, -1, &t, &cnt, "slm_classify")) != SLM_OK) goto done;
        if (i < 0) {
            p_toks = t;
            n_p = cnt;
        } else {
            toks[i] = t;
            n_toks[i] = cnt;
        }
    }
    k_min = n_p;
    for (i = 0; i < n; i++) {
        for (j = 0; j < n_p && j < n_toks[i] && toks[i][j] == p_toks[j]; j++) {}
        shared[i] = j;
        if (j == 0 || j == n_toks[i]) {
            res = slm__fail(s, SLM_ERR_INVALID_ARG,
                            j == 0 ? "slm_classify: the prompt gives no token before label %d (\"%s\"): a model "
                                     "without BOS needs a prompt"
                                   : "slm_classify: label %d (\"%s\") adds no token to the prompt",
                            i, labels[i]);
            goto done;
        }
        if (n_toks[i] > s->n_ctx) {
            res = slm__fail(s, SLM_ERR_CONTEXT_FULL,
                            "slm_classify: the prompt and label %d (\"%s\") are %d tokens, the context %d "
                            "(the prompt alone %d)",
                            i, labels[i], n_toks[i], s->n_ctx, n_p);
            goto done;
        }
        if (j < k_min) k_min = j;
    }
    for (i = 0; i < n; i++) {
        conts[i] = toks[i] + k_min;
        lengths[i] = n_toks[i] - k_min;
        total += lengths[i];
    }
    per_token = (float *)slm__alloc(&s->alloc, (size_t)total * sizeof(float));
    if (!per_token) {
        res = slm__fail(s, SLM_ERR_OOM, "slm_classify: out of memory");
        goto done;
    }
    if ((res = slm_score(s, p_toks, k_min, conts, lengths, n, NULL, per_token)) != SLM_OK) goto done;
    for (i = 0, total = 0; i < n; i++) {
        ll[i] = 0.0;
        for (j = shared[i] - k_min; j < lengths[i]; j++) ll[i] += per_token[total + j];
        total += lengths[i];
    }
    max_ll = ll[0];
    for (i = 1; i < n; i++)
        if (ll[i] > max_ll) max_ll = ll[i];
    for (i = 0, sum = 0.0; i < n; i++) sum += exp(ll[i] - max_ll);
    for (i = 0; i < n; i++) {
        if (probs) probs[i] = (float)(exp(ll[i] - max_ll) / sum);
        if (log_likelihoods) log_likelihoods[i] = ll[i];
    }
done:
    if (toks)
        for (i = 0; i < n; i++) slm__free(&s->alloc, toks[i]);
    slm__free(&s->alloc, toks);
    slm__free(&s->alloc, p_toks);
    slm__free(&s->alloc, text);
    slm__free(&s->alloc, per_token);
    return res;
}

/* ---- chat templates --------------------------------------------------------
   Owns the built-in formatters that stand in for a checkpoint's Jinja chat
   template: the converter recognises the template text and stores which of
   these it is; here a conversation becomes the exact prompt text the model
   was trained on. BOS is left to the tokenizer. */

#define SLM__CHAT_EOS_MAX    64  /* longest EOS text a turn may end with; a longer one becomes "</s>" */
#define SLM__CHAT_SYSTEM_MAX 512 /* longest default system prompt taken from a template; longer: none */

typedef struct slm__writer {
    char *out;
    size_t cap, len;
} slm__writer;
static void slm__put(slm__writer *w, const char *s) {
    for (; *s; s++) {
        if (w->len + 1 < w->cap) w->out[w->len] = *s;
        w->len++;
    }
}

/* The system prompt a ChatML template adds when a conversation has none
   (Qwen2, SmolLM2): the literal of '<|im_start|>system\n...<|im_end|>' or of
   `set system_message = '...'` in the Jinja source, unescaped; NULL if none. */
static const char *slm__default_system(const char *jinja, char *buf, size_t cap) {
    static const char *const starts[] = { "<|im_start|>system\\n", "<|im_start|>system\n", "system_message = '" };
    size_t k, n;
    if (!jinja || cap == 0) return NULL;
    for (k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        const char *p = strstr(jinja, starts[k]);
        if (!p) continue;
        p += strlen(starts[k]);
        for (n = 0; *p && n + 1 < cap; p++) {
            if (k < 2 && strncmp(p, "<|im_end|>", 10) == 0) break;
            if (*p == '\'' || *p == '{' || *p == '}') break; /* end of the literal, or not a literal at all */
            if (p[0] == '\\' && p[1]) {
                p++;
                buf[n++] = *p == 'n' ? '\n' : *p;
                continue;
            }
            buf[n++] = *p;
        }
        if (n > 0 && (k == 2 ? *p == '\'' : strncmp(p, "<|im_end|>", 10) == 0)) {
            buf[n] = 0;
            return buf;
        }
    }
    return NULL;
}

SLM_API int slm_chat_format(const slm_model *m, int tmpl, const slm_chat_message *msgs, int n_msgs, int add_assistant,
                            char *out, size_t cap) {
    slm__writer w;
    const char *system = NULL, *eos = "</s>";
    char eos_buf[SLM__CHAT_EOS_MAX];
    int i, first_user = 1;
    if (!m || n_msgs < 0 || (n_msgs > 0 && !msgs) || (!out && cap)) return -1;
    if (tmpl == 0) tmpl = m->vocab.chat_template;
    if (tmpl < SLM_CHAT_CHATML || tmpl > SLM_CHAT_ZEPHYR) return -1;
    for (i = 0; i < n_msgs; i++)
        if (!msgs[i].role || !msgs[i].content) return -1;
    if (m->vocab.eos >= 0) { /* Zephyr and Llama-2 close a turn with the model's own EOS text */
        uint32_t len;
        const char *t = slm__vocab_text(&m->vocab, m->vocab.eos, &len);
        if (len > 0 && len < sizeof eos_buf) {
            memcpy(eos_buf, t, len);
            eos_buf[len] = 0;
            eos = eos_buf;
        }
    }
    w.out = out;
    w.cap = cap;
    w.len = 0;
    if (tmpl == SLM_CHAT_CHATML && (n_msgs == 0 || strcmp(msgs[0].role, "system") != 0)) {
        char def[SLM__CHAT_SYSTEM_MAX];
        const char *d = slm__default_system(slm_model_meta(m, "chat_template"), def, sizeof def);
        if (d) {
            slm__put(&w, "<|im_start|>system\n");
            slm__put(&w, d);
            slm__put(&w, "<|im_end|>\n");
        }
    }
    for (i = 0; i < n_msgs; i++) {
        const char *role = msgs[i].role, *content = msgs[i].content;
        int is_system = strcmp(role, "system") == 0, is_user = strcmp(role, "user") == 0;
        switch (tmpl) {
        case SLM_CHAT_CHATML:
            slm__put(&w, "<|im_start|>");
            slm__put(&w, role);
            slm__put(&w, "\n");
            slm__put(&w, content);
            slm__put(&w, "<|im_end|>\n");
            break;
        case SLM_CHAT_LLAMA3:
            slm__put(&w, "<|start_header_id|>");
            slm__put(&w, role);
            slm__put(&w, "<|end_header_id|>\n\n");
            slm__put(&w, content);
            slm__put(&w, "<|eot_id|>");
            break;
        case SLM_CHAT_PHI3:
            slm__put(&w, "<|");
            slm__put(&w, role);
            slm__put(&w, "|>\n");
            slm__put(&w, content);
            slm__put(&w, "<|end|>\n");
            break;
        case SLM_CHAT_ZEPHYR:
            slm__put(&w, "<|");
            slm__put(&w, role);
            slm__put(&w, "|>\n");
            slm__put(&w, content);
            slm__put(&w, eos);
            slm__put(&w, "\n");
            break;
        case SLM_CHAT_GEMMA: /* no system role: it opens the first user turn */
            if (is_system) {
                system = content;
                break;
            }
            slm__put(&w, "<start_of_turn>");
            slm__put(&w, is_user ? "user" : "model");
            slm__put(&w, "\n");
            if (is_user && system && first_user) {
                slm__put(&w, system);
                slm__put(&w, "\n\n");
            }
            if (is_user) first_user = 0;
            slm__put(&w, content);
            slm__put(&w, "<end_of_turn>\n");
            break;
        case SLM_CHAT_LLAMA2: /* [INST] <<SYS>> ... <</SYS>> user [/INST] answer</s><s>[INST] ... */
            if (is_system) {
                system = content;
                break;
            }
            if (is_user) {
                if (!first_user) slm__put(&w, "<s>");
                slm__put(&w, "[INST] ");
                if (system && first_user) {
                    slm__put(&w, "<<SYS>>\n");
                    slm__put(&w, system);
                    slm__put(&w, "\n<</SYS>>\n\n");
                }
                slm__put(&w, content);
                slm__put(&w, " [/INST]");
                first_user = 0;
            } else {
                slm__put(&w, " ");
                slm__put(&w, content);
                slm__put(&w, eos);
            }
            break;
        }
    }
    if (add_assistant) {
        switch (tmpl) {
        case SLM_CHAT_CHATML: slm__put(&w, "<|im_start|>assistant\n"); break;
        case SLM_CHAT_LLAMA3: slm__put(&w, "<|start_header_id|>assistant<|end_header_id|>\n\n"); break;
        case SLM_CHAT_PHI3: slm__put(&w, "<|assistant|>\n"); break;
        case SLM_CHAT_ZEPHYR: slm__put(&w, "<|assistant|>\n"); break;
        case SLM_CHAT_GEMMA: slm__put(&w, "<start_of_turn>model\n"); break;
        case SLM_CHAT_LLAMA2: break; /* the model answers right after [/INST] */
        }
    }
    if (cap) out[w.len < cap ? w.len : cap - 1] = 0;
    return w.len > (size_t)INT_MAX ? -1 : (int)w.len;
}

/* ---- conversations ---------------------------------------------------------
   Owns slm_chat: a conversation's messages and the tokens its rendering
   becomes in the cache. The rendering of the messages before a reply, with
   the assistant's turn opened, is the text the reply continues; each turn
   tokenizes the text between replies (control tokens parsed) and keeps the
   replies' own ids, so the cache never changes under a finished turn. */

typedef struct slm__conv_msg {
    char *content;  /* owned, NUL-terminated */
    slm_token *ids; /* a reply's tokens (owned), NULL otherwise */
    int n_ids;
    int n_past_before; /* a user message: the cache length before its turn, -1 when unknown */
} slm__conv_msg;

struct slm_conversation {
    slm_session *s;
    int tmpl;
    slm__conv_msg *msgs;
    slm_chat_message *views; /* role and content of msgs, for slm_conversation_get */
    int n_msgs, cap_msgs, cap_views;
    slm_token *toks; /* the rendering's tokens */
    int n_toks, cap_toks;
    char *text; /* scratch: a rendering */
    size_t text_cap;
    char *reply; /* the text of the reply being generated */
    size_t reply_len, reply_cap;
    int reply_oom, n_dropped;
    const slm_gen_opts *user_opts;
};

static int slm__conv_reserve(slm_conversation *c, void **p, int *cap, int need, size_t elem) {
    void *q;
    int n = *cap ? *cap : 8;
    if (need <= *cap) return 1;
    while (n < need) {
        if (n > INT_MAX / 2) return 0;
        n *= 2;
    }
    q = slm__alloc(&c->s->alloc, (size_t)n * elem);
    if (!q) return 0;
    if (*p) {
        memcpy(q, *p, (size_t)*cap * elem);
        slm__free(&c->s->alloc, *p);
    }
    *p = q;
    *cap = n;
    return 1;
}

static char *slm__conv_strdup(slm_conversation *c, const char *t, size_t n) {
    char *d = (char *)slm__alloc(&c->s->alloc, n + 1);
    if (d) {
        memcpy(d, t, n);
        d[n] = 0;
    }
    return d;
}

static void slm__conv_pop(slm_conversation *c) {
    slm__conv_msg *m = &c->msgs[--c->n_msgs];
    slm__free(&c->s->alloc, m->content);
    slm__free(&c->s->alloc, m->ids);
}

static void slm__conv_remove(slm_conversation *c, int i) {
    slm__conv_msg *m = &c->msgs[i];
    slm__free(&c->s->alloc, m->content);
    slm__free(&c->s->alloc, m->ids);
    memmove(c->msgs + i, c->msgs + i + 1, (size_t)(c->n_msgs - i - 1) * sizeof *c->msgs);
    memmove(c->views + i, c->views + i + 1, (size_t)(c->n_msgs - i - 1) * sizeof *c->views);
    c->n_msgs--;
}

static slm_result slm__conv_push(slm_conversation *c, const char *role, const char *content, size_t len) {
    slm__conv_msg *m;
    if (!slm__conv_reserve(c, (void **)&c->msgs, &c->cap_msgs, c->n_msgs + 1, sizeof *c->msgs) ||
        !slm__conv_reserve(c, (void **)&c->views, &c->cap_views, c->n_msgs + 1, sizeof *c->views))
        return SLM_ERR_OOM;
    m = &c->msgs[c->n_msgs];
    memset(m, 0, sizeof *m);
    m->n_past_before = -1;
    if (!(m->content = slm__conv_strdup(c, content, len))) return SLM_ERR_OOM;
    c->views[c->n_msgs].role = role;
    c->views[c->n_msgs].content = m->content;
    c->n_msgs++;
    return SLM_OK;
}

/* Renders the first n messages into c->text; its length, or -1. */
static int slm__conv_render(slm_conversation *c, int n, int add_assistant) {
    int len = slm_chat_format(c->s->model, c->tmpl, c->views, n, add_assistant, c->text, c->text_cap);
    if (len < 0) return -1;
    if ((size_t)len >= c->text_cap) {
        size_t cap = (size_t)len + 256;
        char *t = (char *)slm__alloc(&c->s->alloc, cap);
        if (!t) return -1;
        slm__free(&c->s->alloc, c->text);
        c->text = t;
        c->text_cap = cap;
        len = slm_chat_format(c->s->model, c->tmpl, c->views, n, add_assistant, c->text, c->text_cap);
    }
    return len;
}

static slm_result slm__conv_append(slm_conversation *c, const slm_token *t, int n) {
    if (n <= 0) return SLM_OK;
    if (!slm__conv_reserve(c, (void **)&c->toks, &c->cap_toks, c->n_toks + n, sizeof(slm_token)))
        return slm__fail(c->s, SLM_ERR_OOM, "slm_chat: out of memory");
    memcpy(c->toks + c->n_toks, t, (size_t)n * sizeof(slm_token));
    c->n_toks += n;
    return SLM_OK;
}

static slm_result slm__conv_append_text(slm_conversation *c, const char *text, size_t len, int flags) {
    slm_token *t;
    int n;
    slm_result r =
        slm__tokenize_alloc(c->s, text, len, flags | (c->n_toks == 0 ? SLM_TOK_BOS : 0), -1, &t, &n, "slm_chat");
    if (r != SLM_OK) return r;
    r = slm__conv_append(c, t, n);
    slm__free(&c->s->alloc, t);
    return r;
}

/* c->toks from the messages: the text between replies tokenized, the
   replies' ids kept; the assistant's turn opened when the last message is
   the user's. Where a rendering does not extend the text before it, the
   whole conversation is tokenized as text. */
static slm_result slm__conv_build(slm_conversation *c) {
    char *covered = NULL; /* the rendering so far: text before the last reply, and the reply */
    size_t n_covered = 0, cap = 0;
    int i, len, last_user = c->n_msgs > 0 && strcmp(c->views[c->n_msgs - 1].role, "user") == 0;
    slm_result r = SLM_OK;
    c->n_toks = 0;
    for (i = 0; i <= c->n_msgs && r == SLM_OK; i++) {
        int is_reply = i < c->n_msgs && c->msgs[i].ids;
        if (i < c->n_msgs && !is_reply) continue;
        if (i == c->n_msgs && c->n_msgs > 0 && c->msgs[c->n_msgs - 1].ids) break; /* ends with a reply */
        len = slm__conv_render(c, i, is_reply || last_user);
        if (len < 0) {
            r = slm__fail(c->s, SLM_ERR_OOM, "slm_chat: cannot render the conversation");
            break;
        }
        if ((size_t)len < n_covered || (n_covered && memcmp(c->text, covered, n_covered) != 0)) {
            /* the template rewrites earlier text: tokenize it all */
            len = slm__conv_render(c, c->n_msgs, last_user);
            c->n_toks = 0;
            r = len < 0 ? slm__fail(c->s, SLM_ERR_OOM, "slm_chat: cannot render the conversation")
                        : slm__conv_append_text(c, c->text, (size_t)len, SLM_TOK_SPECIAL);
            break;
        }
        r = slm__conv_append_text(c, c->text + n_covered, (size_t)len - n_covered, SLM_TOK_SPECIAL);
        if (r != SLM_OK || !is_reply) break;
        r = slm__conv_append(c, c->msgs[i].ids, c->msgs[i].n_ids);
        {
            size_t clen = strlen(c->msgs[i].content), need = (size_t)len + clen;
            if (need + 1 > cap) {
                char *t = (char *)slm__alloc(&c->s->alloc, need + 256);
                if (!t) {
                    r = slm__fail(c->s, SLM_ERR_OOM, "slm_chat: out of memory");
                    break;
                }
                slm__free(&c->s->alloc, covered);
                covered = t;
                cap = need + 256;
            }
            memcpy(covered, c->text, (size_t)len);
            memcpy(covered + len, c->msgs[i].content, clen);
            n_covered = need;
        }
    }
    slm__free(&c->s->alloc, covered);
    return r;
}

/* Keeps the cache's common prefix with c->toks, and at most keep tokens. */
static void slm__conv_rewind(slm_conversation *c, int keep) {
    slm_session *s = c->s;
    int common = 0;
    while (common < s->n_past && common < c->n_toks && s->tokens[common] == c->toks[common]) common++;
    if (keep >= 0 && keep < common) common = keep;
    if (common < s->n_past) slm_rewind(s, common);
}

static int slm__conv_on_token(void *user, const char *piece, int len) {
    slm_conversation *c = (slm_conversation *)user;
    if (c->reply_len + (size_t)len + 1 > c->reply_cap) {
        size_t cap = (c->reply_len + (size_t)len + 1) * 2;
        char *t = (char *)slm__alloc(&c->s->alloc, cap);
        if (!t) {
            c->reply_oom = 1;
            return 1;
        }
        if (c->reply) {
            memcpy(t, c->reply, c->reply_len);
            slm__free(&c->s->alloc, c->reply);
        }
        c->reply = t;
        c->reply_cap = cap;
    }
    memcpy(c->reply + c->reply_len, piece, (size_t)len);
    c->reply_len += (size_t)len;
    return c->user_opts->on_token ? c->user_opts->on_token(c->user_opts->user, piece, len) : 0;
}

SLM_API slm_result slm_conversation_new(slm_conversation **out, slm_session *s, int tmpl, const char *system) {
    slm_conversation *c;
    slm_result r;
    if (out) *out = NULL;
    if (!out || !s) return SLM_ERR_INVALID_ARG;
    if (tmpl == 0) tmpl = s->model->vocab.chat_template;
    if (tmpl < SLM_CHAT_CHATML || tmpl > SLM_CHAT_ZEPHYR)
        return slm__fail(s, tmpl == SLM_CHAT_NONE ? SLM_ERR_UNSUPPORTED : SLM_ERR_INVALID_ARG,
                         tmpl == SLM_CHAT_NONE ? "slm_conversation_new: the model has no chat template (name one)"
                                               : "slm_conversation_new: unknown chat template %d",
                         tmpl);
    c = (slm_conversation *)slm__calloc(&s->alloc, 1, sizeof *c);
    if (!c) return slm__fail(s, SLM_ERR_OOM, "slm_conversation_new: out of memory");
    c->s = s;
    c->tmpl = tmpl;
    r = system && *system ? slm__conv_push(c, "system", system, strlen(system)) : SLM_OK;
    if (r == SLM_OK) r = slm__conv_build(c);
    if (r != SLM_OK) {
        slm_conversation_free(c);
        return r == SLM_ERR_OOM ? slm__fail(s, r, "slm_conversation_new: out of memory") : r;
    }
    *out = c;
    return SLM_OK;
}

SLM_API void slm_conversation_free(slm_conversation *c) {
    const slm_allocator *a;
    if (!c) return;
    a = &c->s->alloc;
    while (c->n_msgs > 0) slm__conv_pop(c);
    slm__free(a, c->msgs);
    slm__free(a, c->views);
    slm__free(a, c->toks);
    slm__free(a, c->text);
    slm__free(a, c->reply);
    slm__free(a, c);
}

SLM_API slm_result slm_conversation_get(const slm_conversation *c, slm_conversation_info *out) {
    if (!c || !out) return SLM_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    out->messages = c->views;
    out->n_messages = c->n_msgs;
    out->n_tokens = c->n_toks;
    out->n_dropped = c->n_dropped;
    return SLM_OK;
}

/* Does the text of ids equal text[0..len)? */
static int slm__ids_spell(const slm_model *m, const slm_token *ids, int n, const char *text, size_t len) {
    size_t at = 0;
    int i;
    for (i = 0; i < n; i++) {
        int pl;
        const char *p = slm_token_piece(m, ids[i], &pl);
        if (!p || slm_token_type(m, ids[i]) == SLM_TOKEN_CONTROL || at + (size_t)pl > len ||
            memcmp(text + at, p, (size_t)pl) != 0)
            return 0;
        at += (size_t)pl;
    }
    return at == len;
}

SLM_API slm_result slm_chat(slm_conversation *c, const char *user, const slm_gen_opts *opts, char *out, size_t out_cap,
                            size_t *out_len) {
    slm_session *s;
    slm_gen_opts o, inner;
    slm_result r;
    int reserve, first, n_prompt, n_past_before;
    if (!c) {
        if (out_len) *out_len = 0;
        if (out && out_cap) out[0] = 0;
        return SLM_ERR_INVALID_ARG;
    }
    s = c->s;
    if ((r = slm__gen_begin(s, opts, &o, out, out_cap, out_len, "slm_chat")) != SLM_OK) return r;
    if (!user) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_chat: user message is NULL");
    c->n_dropped = 0;
    n_past_before = s->n_past;
    if (slm__conv_push(c, "user", user, strlen(user)) != SLM_OK)
        return slm__fail(s, SLM_ERR_OOM, "slm_chat: out of memory");
    first = c->n_msgs > 0 && strcmp(c->views[0].role, "system") == 0; /* the first message that may be dropped */
    reserve = o.max_tokens > 0 ? o.max_tokens : s->n_ctx / 4;
    if (first < c->n_msgs - 1) { /* would the system prompt and this message alone fit? (then the history stays) */
        int last = c->n_msgs - 1, n_all = c->n_msgs, n_min;
        slm__conv_msg tm = c->msgs[first];
        slm_chat_message tv = c->views[first];
        c->msgs[first] = c->msgs[last];
        c->views[first] = c->views[last];
        c->n_msgs = first + 1;
        r = slm__conv_build(c);
        n_min = c->n_toks;
        c->n_msgs = n_all;
        c->msgs[last] = c->msgs[first];
        c->views[last] = c->views[first];
        c->msgs[first] = tm;
        c->views[first] = tv;
        if (r != SLM_OK || n_min >= s->n_ctx) {
            slm__conv_pop(c);
            slm__conv_build(c);
            return r != SLM_OK ? r
                               : slm__fail(s, SLM_ERR_CONTEXT_FULL,
                                           "slm_chat: the system prompt and this message are %d tokens; the context "
                                           "holds %d",
                                           n_min, s->n_ctx);
        }
    }
    for (;;) {
        if ((r = slm__conv_build(c)) != SLM_OK) {
            slm__conv_pop(c);
            slm__conv_build(c);
            return r;
        }
        if (c->n_toks + reserve <= s->n_ctx || first >= c->n_msgs - 1) break;
        /* drop the oldest exchange: a user message and the reply after it */
        slm__conv_remove(c, first);
        if (first < c->n_msgs - 1 && strcmp(c->views[first].role, "assistant") == 0) slm__conv_remove(c, first);
        c->n_dropped++;
        n_past_before = -1;
    }
    if (c->n_toks >= s->n_ctx) {
        int n = c->n_toks;
        slm__conv_pop(c);
        slm__conv_build(c);
        return slm__fail(s, SLM_ERR_CONTEXT_FULL,
                         "slm_chat: the system prompt and this message are %d tokens; the context holds %d", n,
                         s->n_ctx);
    }
    c->msgs[c->n_msgs - 1].n_past_before = n_past_before;
    inner = o;
    inner.on_token = slm__conv_on_token;
    inner.user = c;
    c->user_opts = &o;
    c->reply_len = 0;
    c->reply_oom = 0;
    n_prompt = c->n_toks;
    r = slm__generate_tokens(s, c->toks, c->n_toks, 0, &inner, NULL, 0, out, out_cap, out_len, "slm_chat");
    if (c->reply_oom) r = slm__fail(s, SLM_ERR_OOM, "slm_chat: out of memory for the reply");
    if (r != SLM_OK && r != SLM_ERR_CANCELLED && r != SLM_ERR_CONTEXT_FULL) {
        slm__conv_pop(c);
        slm__conv_build(c);
        return r;
    }
    if (r == SLM_ERR_CONTEXT_FULL && s->stats.stop_reason != SLM_STOP_CONTEXT_FULL) { /* the prompt did not fit */
        slm__conv_pop(c);
        slm__conv_build(c);
        return r;
    }
    {
        slm__conv_msg *m;
        slm_token *ids;
        int n_ids = s->n_past - n_prompt, extra = s->stats.stop_reason != SLM_STOP_END_OF_TEXT && s->gen_last >= 0;
        slm_result r2;
        if (n_ids < 0) n_ids = 0;
        if (slm__conv_push(c, "assistant", c->reply ? c->reply : "", c->reply_len) != SLM_OK)
            return slm__fail(s, SLM_ERR_OOM, "slm_chat: out of memory");
        m = &c->msgs[c->n_msgs - 1];
        ids = (slm_token *)slm__alloc(&s->alloc, (size_t)(n_ids + 1) * sizeof(slm_token));
        if (!ids) return slm__fail(s, SLM_ERR_OOM, "slm_chat: out of memory");
        if (n_ids) memcpy(ids, s->tokens + n_prompt, (size_t)n_ids * sizeof(slm_token));
        if (extra) ids[n_ids++] = s->gen_last;
        if (!slm__ids_spell(s->model, ids, n_ids, m->content, c->reply_len)) {
            /* a stop string or a control token: the reply is its text */
            slm__free(&s->alloc, ids);
            ids = NULL;
            r2 = slm__tokenize_alloc(s, m->content, c->reply_len, 0, -1, &ids, &n_ids, "slm_chat");
            if (r2 != SLM_OK) return r2;
            if (!ids) { /* an empty reply still marks the message as a reply */
                ids = (slm_token *)slm__alloc(&s->alloc, sizeof(slm_token));
                if (!ids) return slm__fail(s, SLM_ERR_OOM, "slm_chat: out of memory");
                n_ids = 0;
            }
        }
        m->ids = ids;
        m->n_ids = n_ids;
        r2 = slm__conv_build(c);
        if (r2 != SLM_OK) return r2;
        slm__conv_rewind(c, -1);
    }
    return r;
}

SLM_API slm_result slm_chat_undo(slm_conversation *c) {
    int u, keep;
    if (!c) return SLM_ERR_INVALID_ARG;
    for (u = c->n_msgs - 1; u >= 0 && strcmp(c->views[u].role, "user") != 0; u--) {}
    if (u < 0) return slm__fail(c->s, SLM_ERR_INVALID_ARG, "slm_chat_undo: no exchange to undo");
    keep = c->msgs[u].n_past_before;
    while (c->n_msgs > u) slm__conv_pop(c);
    c->n_dropped = 0;
    if (slm__conv_build(c) != SLM_OK) return SLM_ERR_OOM;
    slm__conv_rewind(c, keep);
    return SLM_OK;
}

SLM_API slm_result slm_chat_reset(slm_conversation *c) {
    if (!c) return SLM_ERR_INVALID_ARG;
    while (c->n_msgs > 0 && !(c->n_msgs == 1 && strcmp(c->views[0].role, "system") == 0)) slm__conv_pop(c);
    c->n_dropped = 0;
    if (slm__conv_build(c) != SLM_OK) return SLM_ERR_OOM;
    slm__conv_rewind(c, -1);
    return SLM_OK;
}

/* A conversation's blob (format in the header). The messages are checked
   whole (roles, text without NUL bytes, ids in the vocabulary) before the
   conversation is made. */
#define SLM__CONV_MAGIC "SLMC"

SLM_API slm_result slm_conversation_save(const slm_conversation *c, void *buf, size_t cap, size_t *size) {
    uint64_t need = 16 + 8 + 8 + 8;
    uint8_t *p;
    int i;
    if (size) *size = 0;
    if (!c || !size || (!buf && cap)) return SLM_ERR_INVALID_ARG;
    for (i = 0; i < c->n_msgs; i++) need += 16 + strlen(c->msgs[i].content) + 4 * (uint64_t)c->msgs[i].n_ids;
    if (need > (uint64_t)((size_t)-1 / 2)) return slm__fail(c->s, SLM_ERR_OOM, "slm_conversation_save: too large");
    *size = (size_t)need;
    if (!buf) return SLM_OK;
    if (cap < need)
        return slm__fail(c->s, SLM_ERR_INVALID_ARG,
                         "slm_conversation_save: the conversation needs %llu bytes, the buffer holds %llu",
                         (unsigned long long)need, (unsigned long long)cap);
    p = (uint8_t *)buf;
    memset(p, 0, 32);
    memcpy(p, SLM__CONV_MAGIC, 4);
    p[4] = 1;
    slm__wr64(p + 8, need);
    slm__wr64(p + 16, slm__model_hash(c->s->model));
    slm__wr32(p + 24, (uint32_t)c->tmpl);
    slm__wr32(p + 28, (uint32_t)c->n_msgs);
    p += 32;
    for (i = 0; i < c->n_msgs; i++) {
        const slm__conv_msg *m = &c->msgs[i];
        const char *role = c->views[i].role;
        size_t len = strlen(m->content);
        slm__wr32(p, strcmp(role, "system") == 0 ? 0u : strcmp(role, "user") == 0 ? 1u : 2u);
        slm__wr32(p + 4, (uint32_t)m->n_past_before);
        slm__wr32(p + 8, (uint32_t)len);
        slm__wr32(p + 12, m->ids ? (uint32_t)m->n_ids : 0xffffffffu);
        memcpy(p + 16, m->content, len);
        p += 16 + len;
        if (m->n_ids) memcpy(p, m->ids, (size_t)m->n_ids * 4);
        p += (size_t)m->n_ids * 4;
    }
    slm__wr64(p, slm__hash64((const uint8_t *)buf, (size_t)need - 8, 0));
    return SLM_OK;
}

SLM_API slm_result slm_conversation_load(slm_conversation **out, slm_session *s, const void *data, size_t size) {
    static const char *const roles[] = { "system", "user", "assistant" };
    const uint8_t *p = (const uint8_t *)data, *q, *end;
    slm_conversation *c;
    uint32_t n_msgs, tmpl, k;
    slm_result r = SLM_OK;
    if (out) *out = NULL;
    if (!out || !s) return SLM_ERR_INVALID_ARG;
    if (!data && size) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_conversation_load: data is NULL");
    if (size < 40 || memcmp(p, SLM__CONV_MAGIC, 4) != 0)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_conversation_load: not a saved conversation (bad magic or too short)");
    if (slm__rd16(p + 4) != 1 || slm__rd16(p + 6) != 0)
        return slm__fail(s, SLM_ERR_UNSUPPORTED, "slm_conversation_load: format %u.%u; this library reads 1.0",
                         slm__rd16(p + 4), slm__rd16(p + 6));
    if (slm__rd64(p + 8) != (uint64_t)size)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_conversation_load: it says %llu bytes but %llu were given",
                         (unsigned long long)slm__rd64(p + 8), (unsigned long long)size);
    if (slm__hash64(p, size - 8, 0) != slm__rd64(p + size - 8))
        return slm__fail(s, SLM_ERR_FORMAT, "slm_conversation_load: corrupted (checksum mismatch)");
    if (slm__rd64(p + 16) != slm__model_hash(s->model))
        return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_conversation_load: saved from another model");
    tmpl = slm__rd32(p + 24);
    n_msgs = slm__rd32(p + 28);
    if (tmpl < SLM_CHAT_CHATML || tmpl > SLM_CHAT_ZEPHYR)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_conversation_load: unknown chat template %u", tmpl);
    end = p + size - 8;
    for (k = 0, q = p + 32; k < n_msgs; k++) { /* check every message before making anything */
        uint32_t role, len, n_ids, j;
        if (end - q < 16) break;
        role = slm__rd32(q);
        len = slm__rd32(q + 8);
        n_ids = slm__rd32(q + 12);
        if (role > 2 || (role == 0 && k != 0) || slm__rdi32(q + 4) < -1 || (n_ids != 0xffffffffu && role != 2) ||
            (uint64_t)(end - q - 16) < (uint64_t)len || memchr(q + 16, 0, len))
            break;
        q += 16 + len;
        if (n_ids == 0xffffffffu) continue;
        if ((uint64_t)(end - q) / 4 < (uint64_t)n_ids) break;
        for (j = 0; j < n_ids; j++)
            if (slm__rdi32(q + 4 * (size_t)j) < 0 || slm__rdi32(q + 4 * (size_t)j) >= s->model->info.n_vocab) break;
        if (j < n_ids) break;
        q += 4 * (size_t)n_ids;
    }
    if (k < n_msgs || q != end)
        return slm__fail(s, SLM_ERR_FORMAT, "slm_conversation_load: message %u is malformed", k);
    c = (slm_conversation *)slm__calloc(&s->alloc, 1, sizeof *c);
    if (!c) return slm__fail(s, SLM_ERR_OOM, "slm_conversation_load: out of memory");
    c->s = s;
    c->tmpl = (int)tmpl;
    for (k = 0, q = p + 32; k < n_msgs && r == SLM_OK; k++) {
        uint32_t len = slm__rd32(q + 8), n_ids = slm__rd32(q + 12);
        slm__conv_msg *m;
        r = slm__conv_push(c, roles[slm__rd32(q)], (const char *)q + 16, len);
        if (r != SLM_OK) break;
        m = &c->msgs[c->n_msgs - 1];
        m->n_past_before = slm__rdi32(q + 4);
        q += 16 + len;
        if (n_ids == 0xffffffffu) continue;
        /* one more than needed: an empty reply still has an array, which marks it a reply */
        if (!(m->ids = (slm_token *)slm__alloc(&s->alloc, ((size_t)n_ids + 1) * sizeof(slm_token)))) {
            r = SLM_ERR_OOM;
            break;
        }
        if (n_ids) memcpy(m->ids, q, (size_t)n_ids * 4);
        m->n_ids = (int)n_ids;
        q += 4 * (size_t)n_ids;
    }
    if (r == SLM_OK) r = slm__conv_build(c);
    if (r != SLM_OK) {
        slm_conversation_free(c);
        return r == SLM_ERR_OOM ? slm__fail(s, r, "slm_conversation_load: out of memory") : r;
    }
    *out = c;
    return SLM_OK;
}

/* ---- fill-in-the-middle ------------------------------------------------------
   Owns slm_fim: the infill prompt of code models, in llama.cpp's order
   ([BOS] fim_pre prefix fim_suf suffix fim_mid), and a generation that ends
   at any FIM control token as well as at end of text. */

/* The prompt into out (cap); returns the count or -needed; 0 with st->rc set on an error. */
static int slm__fim_build(const slm_model *m, const char *prefix, const char *suffix, slm_token *out, int cap,
                          slm__tok_status *st) {
    const slm__vocab *v = &m->vocab;
    const char *parts[2];
    int n = 0, k, i;
    parts[0] = prefix;
    parts[1] = suffix ? suffix : "";
    st->rc = SLM_OK;
    st->msg[0] = 0;
    if (v->fim_pre < 0 || v->fim_suf < 0 || v->fim_mid < 0) {
        st->rc = SLM_ERR_UNSUPPORTED;
        slm__format(st->msg, sizeof st->msg,
                    "the model has no fill-in-the-middle tokens (fim_pre %d, fim_suf %d, fim_mid %d)", v->fim_pre,
                    v->fim_suf, v->fim_mid);
        return 0;
    }
#define SLM__FIM_PUT(t)                 \
    do {                                \
        if (n < cap && out) out[n] = t; \
        n++;                            \
    } while (0)
    if ((v->flags & SLM__TOKFLAG_ADD_BOS) && v->bos >= 0) SLM__FIM_PUT(v->bos);
    for (i = 0; i < 2; i++) {
        int room = out && n < cap ? cap - n : 0;
        SLM__FIM_PUT(i == 0 ? v->fim_pre : v->fim_suf);
        room = out && n < cap ? cap - n : 0;
        k = slm__tokenize(m, parts[i], strlen(parts[i]), 0, room ? out + n : NULL, room, st);
        if (st->rc != SLM_OK) return 0;
        n += k < 0 ? -k : k;
    }
    SLM__FIM_PUT(v->fim_mid);
#undef SLM__FIM_PUT
    return n > cap ? -n : n;
}

SLM_API int slm_fim_tokens(const slm_model *m, const char *prefix, const char *suffix, slm_token *out, int cap) {
    slm__tok_status st;
    int n;
    if (!m || !prefix || cap < 0 || (!out && cap)) return 0;
    n = slm__fim_build(m, prefix, suffix, out, cap, &st);
    if (st.rc != SLM_OK) slm__log(m->log, m->log_user, SLM_LOG_ERROR, "slm_fim_tokens: %s", st.msg);
    return n;
}

SLM_API slm_result slm_fim(slm_session *s, const char *prefix, const char *suffix, const slm_gen_opts *opts, char *out,
                           size_t out_cap, size_t *out_len) {
    const slm__vocab *v;
    slm__tok_status st;
    slm_gen_opts o;
    slm_token *toks, stops[7];
    int n, n_stops = 0;
    slm_result r;
    if (!s) {
        if (out_len) *out_len = 0;
        if (out && out_cap) out[0] = 0;
        return SLM_ERR_INVALID_ARG;
    }
    if ((r = slm__gen_begin(s, opts, &o, out, out_cap, out_len, "slm_fim")) != SLM_OK) return r;
    if (!prefix) return slm__fail(s, SLM_ERR_INVALID_ARG, "slm_fim: prefix is NULL");
    v = &s->model->vocab;
    n = slm__fim_build(s->model, prefix, suffix, NULL, 0, &st);
    if (st.rc != SLM_OK) return slm__fail(s, st.rc, "slm_fim: %s", st.msg);
    n = n < 0 ? -n : n;
    toks = (slm_token *)slm__alloc(&s->alloc, (size_t)n * sizeof(slm_token));
    if (!toks) return slm__fail(s, SLM_ERR_OOM, "slm_fim: out of memory");
    if (slm__fim_build(s->model, prefix, suffix, toks, n, &st) != n) {
        slm__free(&s->alloc, toks);
        return slm__fail(s, st.rc != SLM_OK ? st.rc : SLM_ERR_OOM, "slm_fim: %s", st.msg);
    }
    stops[n_stops++] = v->fim_pre;
    stops[n_stops++] = v->fim_suf;
    stops[n_stops++] = v->fim_mid;
    if (v->fim_pad >= 0) stops[n_stops++] = v->fim_pad;
    if (v->fim_rep >= 0) stops[n_stops++] = v->fim_rep;
    if (v->fim_sep >= 0) stops[n_stops++] = v->fim_sep;
    if (v->eos >= 0) stops[n_stops++] = v->eos;
    r = slm__generate_tokens(s, toks, n, 0, &o, stops, n_stops, out, out_cap, out_len, "slm_fim");
    slm__free(&s->alloc, toks);
    return r;
}

#endif /* SLM__IMPLEMENTED */
#endif /* SLM_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
MIT License

Copyright (c) 2026 the slm authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
------------------------------------------------------------------------------
*/
