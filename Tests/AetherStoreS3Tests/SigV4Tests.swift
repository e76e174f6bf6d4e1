import Testing
import Foundation
@testable import AetherStoreS3

/// AWS's published examples of Signature Version 4: the signature test suite's `get-vanilla` and
/// `get-vanilla-query-order-key-case` (service "service"), and the three worked examples of S3's
/// "Authenticating Requests: Using the Authorization Header" page (GET with Range, PUT with a body,
/// GET of a bucket listing).
@Suite struct SigV4Tests {
    static let suiteKeys = SigV4(accessKey: "AKIDEXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", region: "us-east-1", service: "service")
    static let s3Keys = SigV4(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    static let suiteDate = Date(timeIntervalSince1970: 1_440_938_160)   // 2015-08-30T12:36:00Z
    static let s3Date = Date(timeIntervalSince1970: 1_369_353_600)      // 2013-05-24T00:00:00Z

    func signature(_ headers: [(String, String)]) -> String {
        let auth = headers.first { $0.0 == "Authorization" }!.1
        return String(auth.split(separator: "=").last!)
    }

    @Test func theSignatureTestSuitesGetVanilla() {
        let h = Self.suiteKeys.sign(method: "GET", path: "/", headers: [("Host", "example.amazonaws.com")],
                                    payloadHash: SigV4.emptyHash, date: Self.suiteDate)
        #expect(h.first { $0.0 == "Authorization" }?.1 == "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        #expect(h.first { $0.0 == "x-amz-date" }?.1 == "20150830T123600Z")
        let q = Self.suiteKeys.sign(method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")],
                                    headers: [("Host", "example.amazonaws.com")], payloadHash: SigV4.emptyHash, date: Self.suiteDate)
        #expect(signature(q) == "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
    }

    @Test func s3sWorkedExamples() {
        let host = ("host", "examplebucket.s3.amazonaws.com")
        let range = Self.s3Keys.sign(method: "GET", path: "/test.txt", headers: [host, ("Range", "bytes=0-9")],
                                     payloadHash: SigV4.emptyHash, date: Self.s3Date)
        #expect(signature(range) == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = SigV4.sha256Hex(body)
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let put = Self.s3Keys.sign(method: "PUT", path: "/" + SigV4.uriEncode("test$file.text", slash: false),
                                   headers: [host, ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                                   payloadHash: hash, date: Self.s3Date)
        #expect(signature(put) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
        #expect(put.first { $0.0 == "Authorization" }!.1.contains("SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,"))
        let list = Self.s3Keys.sign(method: "GET", path: "/", query: [("max-keys", "2"), ("prefix", "J")], headers: [host],
                                    payloadHash: SigV4.emptyHash, date: Self.s3Date)
        #expect(signature(list) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func encodingIsRFC3986AsSigV4WantsIt() {
        #expect(SigV4.uriEncode("a b+c/d~e", slash: false) == "a%20b%2Bc/d~e")
        #expect(SigV4.uriEncode("a/b", slash: true) == "a%2Fb")
        #expect(SigV4.uriEncode("ключ", slash: true) == "%D0%BA%D0%BB%D1%8E%D1%87")
        #expect(SigV4.canonicalQuery([("prefix", "p/"), ("list-type", "2")]) == "list-type=2&prefix=p%2F")
    }

    @Test func addressesAreParsedOrRefusedInOneLine() throws {
        let l = try S3Location(url: "s3://my-bucket/some/prefix/", endpoint: "http://127.0.0.1:9000/", region: "eu-west-1")
        #expect(l.bucket == "my-bucket" && l.prefix == "some/prefix/" && l.endpoint == "http://127.0.0.1:9000" && l.url == "s3://my-bucket/some/prefix/")
        #expect(try S3Location(url: "s3://bucket", endpoint: nil, region: "us-west-2").endpoint == "https://s3.us-west-2.amazonaws.com")
        #expect(throws: (any Error).self) { try S3Location(url: "http://bucket/x", endpoint: nil, region: nil) }
        #expect(throws: (any Error).self) { try S3Location(url: "s3://Bad_Bucket/x", endpoint: nil, region: nil) }
        #expect(throws: (any Error).self) { try S3Location(url: "s3://bucket/x", endpoint: "ftp://h", region: nil) }
    }
}
