#if canImport(Glibc)
import Glibc
#endif
import Foundation
import ArgumentParser
import AetherModel
import AetherCore
import AetherServe

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the store's versioned JSON API over HTTP (docs/openapi.json).",
        discussion: """
        Every route but GET /v1/health needs a bearer token (aetherfs token create) of the route's scope. Requests act \
        as the token's uid, through a session's daemon when it is mounted (another uid than the server's: the server \
        must run as root). Prints "listening on HOST:PORT" once it listens (port 0: any free one).

        Examples:
          aetherfs serve
          aetherfs serve --listen 127.0.0.1:0 --max-upload 1GiB
        """)
    @OptionGroup var global: GlobalOptions
    @Option(name: .long, help: "Address and port to listen on (default 127.0.0.1:8470).") var listen = "127.0.0.1:8470"
    @Option(name: .long, help: "The largest archive an import may upload, in bytes or with KiB, MiB, GiB (default 16GiB).") var maxUpload = "16GiB"
    @Option(name: .long, help: "Seconds a connection may send nothing before it is closed (default 30).") var idleTimeout: Int64 = 30
    @Option(name: .long, help: "A PEM certificate chain: serve HTTPS (with --tls-key).") var tlsCert: String?
    @Option(name: .long, help: "The PEM private key of --tls-cert.") var tlsKey: String?

    func run() throws {
        let repo = try global.open(create: false)
        var options = ServeOptions()
        try fail { () throws(AetherError) in
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port),
                  colon != listen.startIndex else {
                throw .invalid("--listen \(listen): expected HOST:PORT, e.g. 127.0.0.1:8470")
            }
            options.host = String(listen[..<colon])
            options.port = port
            guard let bytes = ServeCommand.bytes(maxUpload), bytes > 0 else { throw .invalid("--max-upload \(maxUpload): a size such as 512MiB or 16GiB") }
            options.maxUpload = bytes
            guard idleTimeout > 0 else { throw .invalid("--idle-timeout must be at least 1 second") }
            options.idleTimeout = idleTimeout
            guard (tlsCert == nil) == (tlsKey == nil) else { throw .invalid("give both --tls-cert and --tls-key, or neither") }
            for f in [tlsCert, tlsKey].compactMap({ $0 }) where !FileManager.default.isReadableFile(atPath: f) {
                throw .notFound("\(f) (not a readable file)")
            }
            options.tlsCertificate = tlsCert
            options.tlsKey = tlsKey
        }
        // A client gone mid-download must not kill the server (the exporter writes into a pipe).
        signal(SIGPIPE, SIG_IGN)
        let server = Server(repo: repo, options: options)
        let json = global.json, host = options.host, scheme = tlsCert == nil ? "http" : "https"
        let finished = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var failure: (any Error)?
        Task {
            do {
                try await server.run { port in
                    say(json ? JSONText.encode(["listening": "\(host):\(port)", "scheme": scheme]) : "listening on \(host):\(port)\(scheme == "https" ? " (https)" : "")")
                }
            } catch {
                failure = error
            }
            finished.signal()
        }
        finished.wait()
        if let failure {
            printError("serve: \(failure)")
            throw ExitCode(1)
        }
    }

    /// `123`, `512KiB`, `64MiB`, `16GiB`.
    static func bytes(_ text: String) -> Int64? {
        for (suffix, shift) in [("KiB", 10), ("MiB", 20), ("GiB", 30), ("TiB", 40)] where text.hasSuffix(suffix) {
            return Int64(text.dropLast(3)).map { $0 << shift }
        }
        return Int64(text)
    }
}
