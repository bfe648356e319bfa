//! Every secret setting can also be given as a file: `NAME_FILE=/path` instead of `NAME=value`.
//!
//! Why: a value in the environment is visible to anything that can read the process's environment
//! (`/proc/<pid>/environ`, `docker inspect`, `kubectl describe pod` for `env:` literals) and ends up
//! in crash reports; Kubernetes and Docker mount Secrets as files, with permissions of their own, and
//! can update them without touching the pod spec. This is the convention of the official PostgreSQL
//! and RabbitMQ images (`POSTGRES_PASSWORD_FILE`).
//!
//! Which settings are secrets is said once, where each is declared: a clap argument marked
//! `hide_env_values = true` (its value is never shown by `--help`) takes a `_FILE` variant. The file's
//! contents become the value as if given on the command line (only in this process's argument
//! vector, never in `/proc/<pid>/cmdline`), with trailing line ends removed, because `echo secret >
//! file` and most secret stores add one. Giving both `NAME` (or its flag) and `NAME_FILE` is refused:
//! which one wins would be a guess, and a guess about credentials is a bad one.
//!
//! The plan (which file feeds which argument) is a pure function of the command, the arguments and
//! the environment; reading the files is the only I/O.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::parser::ValueSource;

use crate::config::ConfigError;

/// One secret to read from a file and pass as `--long=<contents>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The environment variable the value would otherwise come from, e.g. `DATABASE_URL`.
    pub name: String,
    /// The variable naming the file, e.g. `DATABASE_URL_FILE`.
    pub file_variable: String,
    pub path: PathBuf,
    /// The argument's long flag, without the dashes.
    pub long: String,
    /// Whether the argument belongs to the top-level command (inserted before any subcommand) or to
    /// the innermost subcommand used (appended).
    pub at_root: bool,
}

/// The suffix of the variable that names a secret's file.
pub const FILE_SUFFIX: &str = "_FILE";

/// Whether an argument is a secret: its value is hidden from `--help`, and so it takes `_FILE`.
pub fn is_secret(arg: &clap::Arg) -> bool {
    arg.is_hide_env_values_set() && arg.get_env().is_some() && arg.get_long().is_some()
}

/// Adds "Or a file named by NAME_FILE." to the help of every secret argument, in every subcommand.
pub fn document(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if !is_secret(&arg) {
                return arg;
            }
            let name = env_name(&arg);
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let sentence = format!("Or the file named by {name}{FILE_SUFFIX} holds it.");
            let help = match help.trim_end() {
                "" => sentence,
                text if text.ends_with('.') => format!("{text} {sentence}"),
                text => format!("{text}. {sentence}"),
            };
            arg.help(help)
        })
        .mut_subcommands(document)
}

fn env_name(arg: &clap::Arg) -> String {
    arg.get_env()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Which secrets come from files, given the command, its arguments and the environment.
///
/// The subcommand in use is found by a lenient parse (errors such as a missing required argument are
/// left to the real parse); only its secrets and the top-level command's are considered, which are
/// the two places a flag can be added without knowing where in the arguments a subcommand starts.
pub fn plan(
    command: &clap::Command,
    argv: &[OsString],
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Vec<SecretFile>, ConfigError> {
    let Ok(root_matches) = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(argv)
    else {
        // --help, --version: nothing to read.
        return Ok(Vec::new());
    };
    let mut levels = vec![(command, &root_matches, true)];
    let (mut current, mut matches) = (command, &root_matches);
    while let Some((name, sub_matches)) = matches.subcommand() {
        let Some(sub) = current.find_subcommand(name) else {
            break;
        };
        (current, matches) = (sub, sub_matches);
        levels.push((sub, sub_matches, false));
    }
    if levels.len() > 2 {
        // Only the top level and the innermost subcommand take files; the levels between them
        // keep the arguments they were given.
        let innermost = levels.len() - 1;
        levels.drain(1..innermost);
    }

    let mut secrets = Vec::new();
    for (level, matches, at_root) in levels {
        for arg in level.get_arguments().filter(|arg| is_secret(arg)) {
            let name = env_name(arg);
            let file_variable = format!("{name}{FILE_SUFFIX}");
            let Some(path) = env(&file_variable).filter(|path| !path.is_empty()) else {
                continue;
            };
            let given = matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if given {
                return Err(ConfigError::SecretGivenTwice {
                    name,
                    file_variable,
                });
            }
            secrets.push(SecretFile {
                name,
                file_variable,
                path: PathBuf::from(path),
                long: arg.get_long().unwrap_or_default().to_owned(),
                at_root,
            });
        }
    }
    Ok(secrets)
}

/// The value a secret file holds: its text without trailing line ends.
pub fn value_of(secret: &SecretFile, contents: Vec<u8>) -> Result<String, ConfigError> {
    let text = String::from_utf8(contents).map_err(|_| ConfigError::SecretFileInvalid {
        file_variable: secret.file_variable.clone(),
        path: secret.path.clone(),
        reason: "it is not UTF-8 text".into(),
    })?;
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(ConfigError::SecretFileInvalid {
            file_variable: secret.file_variable.clone(),
            path: secret.path.clone(),
            reason: "it is empty".into(),
        });
    }
    Ok(value.to_owned())
}

/// The arguments with every planned secret read from its file and added as `--long=value`.
pub fn apply(
    mut argv: Vec<OsString>,
    secrets: &[SecretFile],
    read: &dyn Fn(&std::path::Path) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<OsString>, ConfigError> {
    // The program name stays first; top-level flags go right after it, before any subcommand.
    let mut root_position = argv.len().min(1);
    for secret in secrets {
        let contents = read(&secret.path).map_err(|source| ConfigError::SecretFileUnreadable {
            file_variable: secret.file_variable.clone(),
            path: secret.path.clone(),
            source,
        })?;
        let value = value_of(secret, contents)?;
        let mut flag = OsString::from(format!("--{}=", secret.long));
        flag.push(OsStr::new(&value));
        if secret.at_root {
            argv.insert(root_position, flag);
            root_position += 1;
        } else {
            argv.push(flag);
        }
    }
    Ok(argv)
}

/// The process's own arguments with its secret files read in.
pub fn resolve(command: &clap::Command) -> Result<Vec<OsString>, ConfigError> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let secrets = plan(command, &argv, &|name| std::env::var_os(name))?;
    apply(argv, &secrets, &|path| std::fs::read(path))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;

    #[derive(Debug, Parser)]
    struct Service {
        #[arg(
            long,
            env = "TEST_DATABASE_URL",
            default_value = "postgres://localhost/x",
            hide_env_values = true
        )]
        database_url: String,
        #[arg(long, env = "TEST_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
        /// Not a secret: no `_FILE` form.
        #[arg(long, env = "TEST_PREFIX", default_value = "p.")]
        prefix: String,
    }

    #[derive(Debug, Parser)]
    struct Tool {
        #[arg(long, env = "TEST_TOOL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ToolCommand,
    }

    #[derive(Debug, Subcommand)]
    enum ToolCommand {
        Migrate {
            #[arg(long, env = "TEST_DATABASE_URL", hide_env_values = true)]
            database_url: String,
        },
        Other,
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn environment(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn files(
        pairs: &[(&str, &str)],
    ) -> impl Fn(&std::path::Path) -> std::io::Result<Vec<u8>> + use<> {
        let map: HashMap<PathBuf, Vec<u8>> = pairs
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.as_bytes().to_vec()))
            .collect();
        move |path| {
            map.get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
    }

    /// Parses with clap reading only the given environment: the test's values are passed as flags
    /// exactly as they would come from the environment, since clap itself reads the real one.
    fn parse<T: Parser>(args: Vec<OsString>) -> T {
        let mut matches = T::command().try_get_matches_from(args).expect("parses");
        T::from_arg_matches_mut(&mut matches).expect("converts")
    }

    #[test]
    fn a_secret_file_gives_the_value_without_its_line_end() {
        let env = environment(&[("TEST_DATABASE_URL_FILE", "/run/secrets/db")]);
        let args = argv(&["svc"]);
        let secrets = plan(&Service::command(), &args, &env).unwrap();
        assert_eq!(secrets.len(), 1, "{secrets:?}");
        let args = apply(
            args,
            &secrets,
            &files(&[("/run/secrets/db", "postgres://u:p@db/x\r\n")]),
        )
        .unwrap();
        let service: Service = parse(args);
        assert_eq!(service.database_url, "postgres://u:p@db/x");
        assert_eq!(service.api_token, None);
    }

    #[test]
    fn only_settings_hidden_from_help_take_a_file() {
        let env = environment(&[
            ("TEST_PREFIX_FILE", "/run/secrets/prefix"),
            ("TEST_API_TOKEN_FILE", "/run/secrets/token"),
        ]);
        let secrets = plan(&Service::command(), &argv(&["svc"]), &env).unwrap();
        let names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["TEST_API_TOKEN"]);
    }

    #[test]
    fn a_secret_given_both_as_a_flag_and_as_a_file_is_refused() {
        let env = environment(&[("TEST_API_TOKEN_FILE", "/run/secrets/token")]);
        let error = plan(
            &Service::command(),
            &argv(&["svc", "--api-token", "abc"]),
            &env,
        )
        .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("TEST_API_TOKEN") && message.contains("TEST_API_TOKEN_FILE"),
            "{message}"
        );
    }

    #[test]
    fn an_unreadable_or_empty_secret_file_names_its_variable() {
        let env = environment(&[("TEST_API_TOKEN_FILE", "/run/secrets/token")]);
        let args = argv(&["svc"]);
        let secrets = plan(&Service::command(), &args, &env).unwrap();
        let missing = apply(args.clone(), &secrets, &files(&[])).unwrap_err();
        assert!(
            missing.to_string().contains("TEST_API_TOKEN_FILE")
                && missing.to_string().contains("/run/secrets/token"),
            "{missing}"
        );
        let empty = apply(args, &secrets, &files(&[("/run/secrets/token", "\n")])).unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
    }

    #[test]
    fn a_subcommand_secret_is_added_after_the_subcommand_and_a_top_level_one_before_it() {
        let env = environment(&[
            ("TEST_DATABASE_URL_FILE", "/s/db"),
            ("TEST_TOOL_TOKEN_FILE", "/s/token"),
        ]);
        let args = argv(&["tool", "migrate"]);
        let secrets = plan(&Tool::command(), &args, &env).unwrap();
        let args = apply(
            args,
            &secrets,
            &files(&[("/s/db", "postgres://db/x\n"), ("/s/token", "t0ken")]),
        )
        .unwrap();
        let tool: Tool = parse(args);
        assert_eq!(tool.token.as_deref(), Some("t0ken"));
        let ToolCommand::Migrate { database_url } = tool.command else {
            panic!("expected migrate, got {:?}", tool.command);
        };
        assert_eq!(database_url, "postgres://db/x");

        // A subcommand without that setting is not handed it.
        let other = plan(&Tool::command(), &argv(&["tool", "other"]), &env).unwrap();
        let names: Vec<&str> = other.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["TEST_TOOL_TOKEN"]);
    }

    #[test]
    fn a_real_file_is_read() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "secret-token-value").unwrap();
        let path = file.path().to_string_lossy().into_owned();
        let env = environment(&[("TEST_API_TOKEN_FILE", &path)]);
        let args = argv(&["svc"]);
        let secrets = plan(&Service::command(), &args, &env).unwrap();
        let args = apply(args, &secrets, &|path| std::fs::read(path)).unwrap();
        let service: Service = parse(args);
        assert_eq!(service.api_token.as_deref(), Some("secret-token-value"));
    }

    #[test]
    fn help_says_which_variable_names_the_file() {
        let mut command = document(Tool::command());
        let help = command
            .find_subcommand_mut("migrate")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("TEST_DATABASE_URL_FILE"), "{help}");
    }
}
