//! Compiles every `.proto` file under `../../proto` with `protox` (pure Rust, no
//! `protoc` needed) and generates prost messages plus tonic clients and servers.

use std::path::{Path, PathBuf};
use std::{env, fs, io};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");

    let mut files = Vec::new();
    collect_protos(&proto_root, &mut files)?;
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    if files.is_empty() {
        return Err(format!("no .proto files found under {}", proto_root.display()).into());
    }

    // Source info is kept so that the generated code carries the proto comments
    // and so that reflection clients (grpcurl describe) show them too.
    let fds = protox::compile(&files, [&proto_root])?;

    let descriptor_path = out_dir.join("email2sms_descriptor.bin");
    fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .generate_default_stubs(true)
        .out_dir(&out_dir)
        .compile_fds(fds)?;
    Ok(())
}

/// Every `*.proto` file below `dir`, recursively (directories may change
/// without the build script knowing their names in advance).
fn collect_protos(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    // Watching each directory catches files being added or removed.
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path);
        }
    }
    Ok(())
}
